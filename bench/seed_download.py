"""The seed's own download loop (shared/seed/phase7-data-packs.md, `_execute_download_step`),
reproduced for comparison: urllib, 8 KiB reads, write, then a second pass over the file
to hash it (8 KiB reads again). Usage: python -m bench.seed_download URL DEST sha256:HEX
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path


def _verify_checksum(path: Path, expected: str) -> bool:
    algo, expected_hash = expected.split(":", 1)
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8192), b""):
            h.update(chunk)
    return h.hexdigest() == expected_hash


def execute_download_step(url: str, dest: Path, checksum: str) -> dict:
    dest.parent.mkdir(parents=True, exist_ok=True)
    req = urllib.request.Request(url, headers={"User-Agent": "devops-cp"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        with open(dest, "wb") as f:
            downloaded = 0
            while True:
                chunk = resp.read(8192)
                if not chunk:
                    break
                f.write(chunk)
                downloaded += len(chunk)
    if checksum and not _verify_checksum(dest, checksum):
        dest.unlink(missing_ok=True)
        return {"ok": False, "error": "Checksum mismatch"}
    return {"ok": True, "downloaded": downloaded}


if __name__ == "__main__":
    result = execute_download_step(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
    sys.exit(0 if result["ok"] else 1)
