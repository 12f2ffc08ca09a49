"""The bootstrap script: a short POSIX sh script that brings devops-cp onto a host that lacks it.

Written beside every bundle made with `--include-tool` (OUT.tar.zst.bootstrap.sh,
listed in the signed checksum list) and printed by `devops-cp data bootstrap-script`.
It uses standard tools only, in the README's order: the checksum list's signature
(openssl), the archive or every part (sha256sum -c), the manifest and the tool's
wheels out of the archive (tar, zstd) and the manifest's signature (openssl), a
virtual environment and `pip install --no-index` from those wheels, then
`devops-cp data sideload`. It writes only under the directory the operator names
(and, through sideload, the data directories).

The text depends only on the bundle's names and its manifest, so the script that
`bootstrap-script` prints matches the one written at bundle time byte for byte.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from executor import durable
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME

SCRIPT_SUFFIX = ".bootstrap.sh"
SHA256_SUFFIX = ".sha256"
SIG_SUFFIX = ".sig"


@dataclass(frozen=True)
class BootstrapInfo:
    bundle_name: str  # OUT.tar.zst
    parts: tuple[str, ...]  # OUT.tar.zst.001, ... in order; empty for a single archive
    tool_members: tuple[str, ...]  # tool/NAME.whl, in archive order
    python: str  # "3.11": the interpreter the wheels are for
    dist_name: str  # what pip installs: devops-cp-data


def script_name(bundle_name: str) -> str:
    return bundle_name + SCRIPT_SUFFIX


_TEMPLATE = r"""#!/bin/sh
# Bootstrap devops-cp from the bundle beside this script, then sideload the bundle.
#
# This script came on the stick with the bundle: check it BEFORE running it. In its folder:
#   openssl pkeyutl -verify -pubin -inkey SITE.pub -rawin -in @BUNDLE@.sha256 -sigfile @BUNDLE@.sha256.sig
#   sha256sum -c @BUNDLE@.sha256      (the signed checksum list covers this script too)
# Only then:
#   sh @SCRIPT@ DIR SITE.pub [sideload options...]
#
# DIR: where the tool goes (created if missing): the manifest, the tool's wheels and a
#      virtual environment. Nothing outside DIR is written, except the data sideload installs.
# SITE.pub: the bundle signer's public key (PEM), brought to this host separately.
# Needs openssl (3.x), sha256sum, tar, zstd and Python @PYTHON@ with venv (PYTHON=... picks one).
# Stops at the first check that fails: exit 3 for a failed check, 7 for a missing tool, 2 for usage.
set -eu

BUNDLE=@BUNDLE@
die() { printf 'bootstrap: %s\n' "$1" >&2; exit "${2:-3}"; }
[ $# -ge 2 ] || die "usage: sh $0 DIR SITE.pub [sideload options...]" 2
for tool in openssl sha256sum tar zstd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required" 7
done
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (@PYTHON_TUPLE@))' 2>/dev/null ||
  die "the bundled wheels are for Python @PYTHON@: set PYTHON to a python@PYTHON@" 7
case $2 in /*) KEY=$2 ;; *) KEY=$(pwd)/$2 ;; esac
[ -f "$KEY" ] || die "no public key at $KEY" 2
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
shift 2
cd "$(dirname "$0")"
# pip and Python: only the bundle's wheels, no cache or bytecode outside DIR, no pip.conf.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

echo "bootstrap: 1/5 the checksum list is signed by $KEY" >&2
openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in "$BUNDLE.sha256" -sigfile "$BUNDLE.sha256.sig" >/dev/null ||
  die "$BUNDLE.sha256 is not signed by that key"
echo "bootstrap: 2/5 the bundle matches the checksum list" >&2
# Every line but this script's own: it is running already, and may have been saved under another name.
awk -v self=@SCRIPT@ 'substr($0, 67) != self' "$BUNDLE.sha256" | sha256sum -c - >&2 ||
  die "the bundle does not match $BUNDLE.sha256: copy it again"
echo "bootstrap: 3/5 the manifest and the tool's wheels, out of the archive; the manifest's signature" >&2
rm -rf "$DIR/tool"
@UNPACK@ -C "$DIR" --occurrence @MEMBERS@ ||
  die "cannot unpack the tool's wheels from the bundle"
openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in "$DIR/@MANIFEST@" -sigfile "$DIR/@SIGNATURE@" >/dev/null ||
  die "@MANIFEST@ is not signed by that key"
echo "bootstrap: 4/5 a virtual environment in $DIR/venv, with the tool from the bundle's wheels only" >&2
"$PYTHON" -m venv "$DIR/venv" || die "cannot create a virtual environment (Debian/Ubuntu: apt-get install python3-venv)" 7
"$DIR/venv/bin/python" -m pip install --quiet --no-index --find-links "$DIR/tool" @DIST@ ||
  die "pip could not install the tool from the bundle's wheels" 7
"$DIR/venv/bin/devops-cp" --version >&2
echo "bootstrap: 5/5 devops-cp data sideload" >&2
exec "$DIR/venv/bin/devops-cp" data sideload "$(pwd)/$BUNDLE" --trust "$KEY" "$@"
"""


def render(info: BootstrapInfo) -> str:
    q = shlex.quote
    if info.parts:
        unpack = f"cat -- {' '.join(q(p) for p in info.parts)} | zstd -dcq | tar -xf -"
    else:
        unpack = 'tar -I zstd -xf "$BUNDLE"'
    members = " ".join(q(m) for m in (MANIFEST_NAME, SIGNATURE_NAME, *info.tool_members))
    major, minor = info.python.split(".")
    replacements = {
        "@SCRIPT@": q(script_name(info.bundle_name)),
        "@BUNDLE@": q(info.bundle_name),
        "@PYTHON_TUPLE@": f"{int(major)}, {int(minor)}",
        "@PYTHON@": info.python,
        "@UNPACK@": unpack,
        "@MEMBERS@": members,
        "@MANIFEST@": MANIFEST_NAME,
        "@SIGNATURE@": SIGNATURE_NAME,
        "@DIST@": q(info.dist_name),
    }
    text = _TEMPLATE
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def write(directory: Path, info: BootstrapInfo) -> tuple[Path, str]:
    """Write OUT.tar.zst.bootstrap.sh (mode 0755) beside the bundle; returns its path and sha256."""
    data = render(info).encode()
    path = directory / script_name(info.bundle_name)
    durable.write_atomic(path, data)
    path.chmod(0o755)
    return path, hashlib.sha256(data).hexdigest()
