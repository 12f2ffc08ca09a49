"""Typed errors, shared by every layer.

Two roots, as in python-tuf: `FetchError` means "could not get it" (network,
disk, permission, tools, locks) and `TrustError` means "got it, but must not
trust it" (signature, hash, length, archive structure). `PolicyError` is a rule
the user can override with a flag, and `UsageError` is bad input.
Each class carries its exit code; the CLI maps nothing by hand.
"""

from __future__ import annotations

from manifests.fmt import fmt_size


class DataPackError(Exception):
    """Base of every error this tool raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


# --- exit 2: usage, recipes, config -------------------------------------------------


class UsageError(DataPackError):
    exit_code = 2


class RecipeError(UsageError):
    """A recipe file is invalid: names the file, the field and the problem."""

    def __init__(self, source: str, field: str, problem: str):
        super().__init__(f"{source}: field '{field}': {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class ConfigError(UsageError):
    pass


class ChoiceError(UsageError):
    pass


class UnknownPackError(UsageError):
    pass


# --- exit 3: got it, must not trust it ----------------------------------------------


class TrustError(DataPackError):
    exit_code = 3


class ChecksumMismatch(TrustError):
    def __init__(self, what: str, expected: str, actual: str):
        super().__init__(
            f"checksum mismatch for {what}: expected sha256:{expected}, got sha256:{actual}",
            hint="the data is corrupted or was changed; nothing was installed",
        )
        self.expected = expected
        self.actual = actual


class LengthError(TrustError):
    pass


class SignatureError(TrustError):
    pass


class BundleStructureError(TrustError):
    """A bundle that is malformed or hostile (bad member, missing file, extra data)."""


class UnsafeArchiveError(TrustError):
    """An archive to extract holds a member that could escape or is not a plain file."""


# --- exit 4: refused by policy ------------------------------------------------------


class PolicyError(DataPackError):
    exit_code = 4


class HardwareRequirementError(PolicyError):
    pass


class ConfirmationRequired(PolicyError):
    pass


# --- exits 5-8: could not get it ----------------------------------------------------


class FetchError(DataPackError):
    """Root of "could not get it"."""


class NoSpaceError(FetchError):
    exit_code = 5

    def __init__(self, where: str, needed: int, free: int | None = None):
        have = f", {fmt_size(free)} free" if free is not None else ""
        super().__init__(
            f"not enough space in {where}: needs {fmt_size(needed)}{have}",
            hint="free some space there or point this data type elsewhere in the config file's [data_dirs]",
        )
        self.where = where
        self.needed = needed
        self.free = free


class FileTooLargeError(FetchError):
    """The filesystem refuses a file this large (EFBIG): FAT32, on many USB sticks, holds at most 4 GiB - 1 byte."""

    exit_code = 5
    DATA_DIR_HINT = "FAT32 holds at most 4 GiB - 1 byte per file: point this data type at another filesystem in the config file's [data_dirs]"

    def __init__(self, where: str, size: int, hint: str = DATA_DIR_HINT):
        super().__init__(f"the filesystem of {where} cannot hold a file of {fmt_size(size)}", hint=hint)
        self.where = where
        self.size = size


class NotWritableError(FetchError):
    exit_code = 5

    def __init__(self, where: str, reason: str = "not writable"):
        super().__init__(
            f"cannot write to {where}: {reason}",
            hint="fix its permissions or set another directory in the config file's [data_dirs]",
        )
        self.where = where


class NetworkError(FetchError):
    exit_code = 6


class ToolError(FetchError):
    """A required external tool is missing or failed."""

    exit_code = 7


class LockTimeout(FetchError):
    exit_code = 8


__all__ = [name for name in dir() if name.endswith(("Error", "Mismatch", "Required", "Timeout"))]
