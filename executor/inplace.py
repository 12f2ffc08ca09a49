"""Files already in a data dir that a pack keeps instead of fetching them again: no byte moved
for what is already there.

Two kinds. The pack's own file from its installed version, still as its record says (size and
modification time, or re-hashed with --verify) and what the step would fetch (the same sha256):
kept, so a repair fetches only what changed. And a file that no pack records, with exactly the
sha256 that the recipe or the signed manifest pins, a plain file of this user with a single link
(whisper downloaded the model itself, say): re-hashed, then adopted (recorded, never deleted by
`remove`). Anything else is fetched as usual, and at commit txn.py refuses to replace a file the
pack does not own without --overwrite. Under the commit lock txn.py checks again, cheaply, that a
kept file is still the same inode, size and modification time.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from executor import upstream
from executor.intact import MTIME_SLACK
from executor.store import InstallRecord, parse_iso
from executor.transfer import hash_file

Identity = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def identity(found: os.stat_result) -> Identity:
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


@dataclass(frozen=True)
class InPlace:
    """A file the pack keeps where it is, as it was when it was checked."""

    rel: str
    size: int
    sha256: str
    identity: Identity
    adopted: bool  # there before the pack: recorded as adopted, never deleted by `remove`


class InPlaceFinder:
    def __init__(self, data_dir: Path, key: str, previous: InstallRecord | None, others: list[InstallRecord], *, verify: bool = False, same_version: bool = False):
        """`previous`: the pack's installed record; `others`: every record (who owns which file).
        `verify`: re-hash the pack's own files instead of trusting size and time. `same_version`:
        the installed version is current (a repair, not an update), so a step without a published
        checksum would fetch what the record says it fetched."""
        self.data_dir = data_dir
        self.verify = verify
        self.same_version = same_version
        ours = previous is not None and Path(previous.data_dir) == data_dir
        self.recorded = {f.path: f for f in previous.files} if ours else {}
        self.adopted_before = set(previous.adopted) if ours else set()
        self.installed_by = parse_iso(previous.installed_at).timestamp() + MTIME_SLACK if ours else 0.0
        self.owned_by_others = {f.path for r in others if r.key != key and Path(r.data_dir) == data_dir for f in r.files}
        self.validators = upstream.recorded(previous.extra) if ours else {}

    def find(self, rel: str, sha256: str | None, size: int | None = None, *, adopt: bool = True) -> InPlace | None:
        """The file at `rel` when it is what the step would produce (`sha256`; `size` when known), else None.
        `adopt=False`: only the installed version's own files (nothing is read)."""
        path = self.data_dir / rel
        try:
            found = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(found.st_mode) or (size is not None and found.st_size != size):
            return None
        recorded = self.recorded.get(rel)
        if recorded is not None:
            return self._still_installed(path, found, recorded.size, recorded.sha256, sha256)
        if not adopt or sha256 is None or rel in self.owned_by_others or found.st_uid != os.getuid() or found.st_nlink != 1:
            return None  # adopting it could change something else: another pack's file, a link, not this user's
        return self._rehashed(path, rel, found, sha256, adopted=True)

    def validators_for(self, url: str, kept: InPlace) -> dict | None:
        """The installed version's validators for `url` (executor/upstream.py), carried over for a file
        it kept: a later install can still ask upstream. None for a file adopted now (never fetched)."""
        found = self.validators.get(url) if kept.rel in self.recorded else None
        return found.to_json() if found is not None else None

    def adoption_note(self, kept: InPlace) -> str | None:
        """What to tell the user about a file adopted just now (None for one kept from the installed version)."""
        if not kept.adopted or kept.rel in self.adopted_before:
            return None
        return f"{self.data_dir / kept.rel} is already there with the expected sha256: adopted, not fetched again (`remove` leaves it)"

    def _still_installed(self, path: Path, found: os.stat_result, size: int, recorded: str, expected: str | None) -> InPlace | None:
        rel = path.relative_to(self.data_dir).as_posix()
        if expected is None and not self.same_version or expected not in (None, recorded) or found.st_size != size:
            return None
        adopted = rel in self.adopted_before
        if self.verify:
            return self._rehashed(path, rel, found, recorded, adopted=adopted)
        if found.st_mtime > self.installed_by:
            return None  # written after the install: fetched again
        return InPlace(rel, size, recorded, identity(found), adopted)

    def _rehashed(self, path: Path, rel: str, found: os.stat_result, expected: str, *, adopted: bool) -> InPlace | None:
        if hash_file(path).sha256 != expected:
            return None
        try:
            after = os.lstat(path)
        except FileNotFoundError:
            return None
        if identity(after) != identity(found):
            return None  # changed while it was read
        return InPlace(rel, found.st_size, expected, identity(found), adopted)
