"""tar.gz archives built in memory for tests (fixed mtimes, so the bytes are reproducible)."""

from __future__ import annotations

import io
import tarfile

MTIME = 1_700_000_000


def make_tar_gz(members: list[tuple], *, fmt: str = "w:gz") -> bytes:
    """members: (name, bytes) for a file, or (name, "symlink"|"hardlink"|"dir", target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=fmt) as tar:
        for member in members:
            name, content = member[0], member[1]
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            elif content == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE if content == "symlink" else tarfile.LNKTYPE
                info.linkname = member[2]
                tar.addfile(info)
    return buffer.getvalue()


def folder_tar_gz(files: dict[str, bytes], top: str) -> bytes:
    """Every file under one top folder, in name order, compressed fast (level 1)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def trivy_db_tarball(trivy_db: bytes, metadata: bytes) -> bytes:
    """db.tar.gz as Trivy publishes it: trivy.db and metadata.json at the top."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("trivy.db", trivy_db), ("metadata.json", metadata)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
