"""Click parameter types shared by the commands: bad values are usage errors (exit 2) at parse time."""

from __future__ import annotations

import click

from devops_cp.cli_common import PROGRESS_MODES
from manifests.errors import UsageError
from manifests.units import parse_size


class Size(click.ParamType):
    """A size with a unit (4G, 700MiB, fat32); `minimum` in bytes."""

    name = "SIZE"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, minimum=self.minimum)
        except UsageError as exc:
            self.fail(f"{exc.message}; {exc.hint}", param, ctx)



def progress_options(func):
    """--progress MODE and -q/--quiet, for every command that moves bytes."""
    func = click.option("-q", "--quiet", is_flag=True, help="No progress and no notices: only the result and errors.")(func)
    return click.option(
        "--progress",
        type=PROGRESS_MODES,
        default="auto",
        show_default=True,
        help="auto: a bar on a terminal, plain lines otherwise; json: one event per line; none: no progress (warnings still shown).",
    )(func)
