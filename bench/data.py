"""The benchmark's data, generated on disk in chunks (memory stays flat whatever the size).

* incompressible: os.urandom, like a model checkpoint or an already-compressed DB;
* text-like: a vulnerability-DB-like JSON array (ids, packages, versions, prose), which
  zstd compresses about as well as the real Trivy/Grype JSON;
* small files: many files of about 8 KiB each (NLTK data, fonts, docs), cut from text.
"""

from __future__ import annotations

import hashlib
import os
import random
import tarfile
from pathlib import Path

CHUNK = 1 << 20

_WORDS = (
    "buffer overflow in the parser allows remote attackers to execute arbitrary code via a crafted "
    "request denial of service memory corruption use after free integer underflow improper validation "
    "of input leads to information disclosure when handling malformed headers in versions before the "
    "fixed release an authenticated user could escalate privileges through the administrative interface"
).split()
_SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL", "UNKNOWN")
_ECOSYSTEMS = ("npm", "pypi", "maven", "go", "cargo", "debian", "alpine", "rubygems")


def write_incompressible(path: Path, size: int) -> str:
    """`size` random bytes; returns their sha256."""
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            f.write(chunk)
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


def _advisory(rng: random.Random, n: int) -> str:
    words = " ".join(rng.choices(_WORDS, k=rng.randrange(12, 40)))
    pkg = f"{rng.choice(_ECOSYSTEMS)}-pkg-{rng.randrange(20000)}"
    fixed = f"{rng.randrange(12)}.{rng.randrange(30)}.{rng.randrange(60)}"
    return (
        f'{{"VulnerabilityID":"CVE-{2000 + n % 27}-{10000 + n}","PkgName":"{pkg}","Severity":"{rng.choice(_SEVERITIES)}",'
        f'"CVSS":{{"nvd":{{"V3Score":{rng.randrange(10, 100) / 10}}}}},"FixedVersion":"{fixed}",'
        f'"PublishedDate":"20{rng.randrange(10, 27)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T00:00:00Z",'
        f'"Title":"{words[:60]}","Description":"{words}",'
        f'"References":["https://nvd.nist.gov/vuln/detail/CVE-{2000 + n % 27}-{10000 + n}","https://github.com/advisories/GHSA-{n:08x}"]}}'
    )


def write_text_like(path: Path, size: int, seed: int = 1) -> str:
    """A JSON array of advisories, about `size` bytes; returns its sha256."""
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    written, n = 0, 0
    with open(path, "wb") as f:

        def emit(text: str) -> None:
            nonlocal written
            data = text.encode()
            f.write(data)
            hasher.update(data)
            written += len(data)

        emit("[\n")
        while written < size:
            batch = ",\n".join(_advisory(rng, n + i) for i in range(2000))
            n += 2000
            emit(("" if n == 2000 else ",\n") + batch)
        emit("\n]\n")
    return hasher.hexdigest()


def write_small_files(root: Path, count: int, mean_size: int = 8192, seed: int = 2) -> int:
    """`count` files of 4-12 KiB (mean about `mean_size`) in 100 folders; returns the total bytes."""
    rng = random.Random(seed)
    blob = "\n".join(_advisory(rng, i) for i in range(2000)).encode()
    total = 0
    for i in range(count):
        size = rng.randrange(mean_size // 2, mean_size * 3 // 2)
        start = rng.randrange(0, len(blob) - size)
        path = root / f"d{i % 100:02d}" / f"f{i:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob[start : start + size])
        total += size
    return total


def write_tar(source_root: Path, out: Path, arcname: str) -> str:
    """An uncompressed tar of `source_root` (sorted, so it is reproducible); returns its sha256."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in source_root.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=f"{arcname}/{path.relative_to(source_root).as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return sha256_file(out)


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def warm(path: Path) -> None:
    """Read a file once so every contender starts from the same warm page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass
