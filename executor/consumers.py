"""What the consuming programs need to take our files as their own.

Trivy: `db/metadata.json` (and `java-db/metadata.json`) carries `DownloadedAt`, which trivy sets
itself after it downloads a DB (pkg/db/db.go, `updateDownloadedAt`); the artifact ships it zero,
and trivy then takes the DB for damaged and downloads it again. It is set to when the data was
fetched from upstream (a bundle carries that time), and the install record holds the file as
written, so `--verify` and the record agree with the disk. Done just before a pack's swap.

NLTK: nltk's downloader decides that a package is installed by `<subdir>/<id>.zip` (its size
and MD5 against the index) beside the unzipped folder (nltk/downloader.py, `_pkg_status`), so
an unzipped package whose zip is gone is "stale" and `nltk.download()` fetches it again over
our files. The zip, byte for byte as published, is kept there as nltk keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from executor.transfer import translate_write_error
from manifests.errors import DataPackError, NotWritableError

NLTK_DATA_TYPE = "nltk_data"
TRIVY_DATA_TYPE = "vulnerability_db"
TRIVY_METADATA = "metadata.json"
MAX_METADATA = 1 << 20
UNSET = ("", None, "0001-01-01T00:00:00Z")  # Go's zero time.Time, as the published artifact has it  # trivy's is about 150 bytes: anything larger is not it


def keeps_zip_beside(data_type: str, fmt: str | None) -> bool:
    return data_type == NLTK_DATA_TYPE and fmt == "zip"


def keep_zip_beside(txn, archive: Path, dest: str, size: int, sha256: str) -> None:
    """The verified zip that was unpacked into `dest` becomes `dest.zip` (moved, not copied)."""
    rel = dest.rstrip("/") + ".zip"
    os.replace(archive, txn.path_for(rel))
    txn.add(rel, size, sha256)


def adopt(data_type: str, txn, fetched_at: str) -> None:
    """Before the swap: a failure here leaves nothing of the pack visible, and is exit 5, not a crash."""
    if data_type == TRIVY_DATA_TYPE:
        for rel in [r for r in txn.files if r.rpartition("/")[2] == TRIVY_METADATA]:
            try:
                _set_downloaded_at(txn, rel, fetched_at)
            except OSError as exc:
                error = translate_write_error(exc, txn.path_for(rel), MAX_METADATA)
                raise error if isinstance(error, DataPackError) else NotWritableError(str(txn.data_dir), exc.strerror or str(exc)) from exc


def _set_downloaded_at(txn, rel: str, fetched_at: str) -> None:
    path = txn.path_for(rel)
    if os.path.getsize(path) > MAX_METADATA:
        return
    with open(path, "rb") as f:
        try:
            meta = json.loads(f.read())
        except ValueError:
            return  # not trivy's metadata: left as it came
    if not isinstance(meta, dict) or meta.get("DownloadedAt", "set") not in UNSET:
        return  # not trivy's, or trivy itself downloaded it (a tool step) and said when
    meta["DownloadedAt"] = fetched_at  # RFC 3339, as Go's time.Time reads it
    data = json.dumps(meta, separators=(",", ":")).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    txn.add(rel, len(data), hashlib.sha256(data).hexdigest())
