"""What the consuming program needs to take our files as its own, done just before a pack's swap.

Trivy: `db/metadata.json` (and `java-db/metadata.json`) carries `DownloadedAt`, which trivy sets
itself after it downloads a DB (pkg/db/db.go, `updateDownloadedAt`); the artifact ships it zero,
and trivy then takes the DB for damaged and downloads it again. It is set to when the data was
fetched from upstream (a bundle carries that time), and the install record holds the file as
written, so `--verify` and the record agree with the disk.
"""

from __future__ import annotations

import hashlib
import json
import os

TRIVY_DATA_TYPE = "vulnerability_db"
TRIVY_METADATA = "metadata.json"
MAX_METADATA = 1 << 20  # trivy's is about 150 bytes: anything larger is not it


def adopt(data_type: str, txn, fetched_at: str) -> None:
    if data_type == TRIVY_DATA_TYPE:
        for rel in [r for r in txn.files if r.rpartition("/")[2] == TRIVY_METADATA]:
            _set_downloaded_at(txn, rel, fetched_at)


def _set_downloaded_at(txn, rel: str, fetched_at: str) -> None:
    path = txn.path_for(rel)
    if os.path.getsize(path) > MAX_METADATA:
        return
    with open(path, "rb") as f:
        try:
            meta = json.loads(f.read())
        except ValueError:
            return  # not trivy's metadata: left as it came
    if not isinstance(meta, dict) or "DownloadedAt" not in meta:
        return
    meta["DownloadedAt"] = fetched_at  # RFC 3339, as Go's time.Time reads it
    data = json.dumps(meta, separators=(",", ":")).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    txn.add(rel, len(data), hashlib.sha256(data).hexdigest())
