"""Rendering progress events at the edge: a live rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING

from executor import events

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


class RichBars:
    """One bar per step: bytes, speed and ETA. Drawn on stderr."""

    def __init__(self, console: Console):
        # rich is imported only when a bar is drawn: other commands skip its start-up cost.
        from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.console = console
        self.progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[tuple[str, int], TaskID] = {}

    def __enter__(self) -> "RichBars":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.StepStarted):
            self.tasks[(event.pack, event.step)] = self.progress.add_task(f"{event.pack}: {event.label}", total=event.total)
        elif isinstance(event, events.Progress):
            task = self.tasks.get((event.pack, event.step))
            if task is not None:
                self.progress.update(task, completed=event.downloaded, total=event.total)
        elif isinstance(event, events.StepDone):
            task = self.tasks.get((event.pack, event.step))
            if task is not None:
                self.progress.update(task, completed=event.size, total=event.size)
        elif isinstance(event, events.Notice):
            style = "yellow" if event.level == "warning" else "dim"
            self.progress.console.print(f"[{style}]{event.message}[/]", markup=True, highlight=False)


class PlainLines:
    """No terminal: a line when a step starts, at every 25%, and when it ends."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.quarters: dict[tuple[str, int], int] = {}

    def __enter__(self) -> "PlainLines":
        return self

    def __exit__(self, *exc) -> None:
        self.stream.flush()

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.StepStarted):
            print(f"{event.pack}: {event.label} ...", file=self.stream)
        elif isinstance(event, events.Progress) and event.percent is not None:
            quarter = event.percent // 25
            if quarter > self.quarters.get((event.pack, event.step), 0) and quarter < 4:
                self.quarters[(event.pack, event.step)] = quarter
                print(f"{event.pack}: {event.label} {event.percent}%", file=self.stream)
        elif isinstance(event, events.StepDone):
            print(f"{event.pack}: {event.label} done ({event.size} bytes)", file=self.stream)
        elif isinstance(event, events.Notice):
            print(f"{event.pack + ': ' if event.pack else ''}{event.message}", file=self.stream)
        self.stream.flush()


class JsonLines:
    """`--progress json`: one JSON object per event on stderr, for scripts."""

    def __enter__(self) -> "JsonLines":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, event: events.Event) -> None:
        print(json.dumps(events.to_dict(event)), file=sys.stderr, flush=True)


def progress_renderer(mode: str = "auto"):
    if mode == "json":
        return JsonLines()
    if mode == "none":
        return _Silent()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        from rich.console import Console

        return RichBars(Console(stderr=True))
    return PlainLines(sys.stderr)


class _Silent:
    """`--progress none`: no progress, but notices (a warning, a run waiting for a lock) still print."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __call__(self, event):
        if isinstance(event, events.Notice):
            print(f"{event.pack + ': ' if event.pack else ''}{event.message}", file=sys.stderr, flush=True)
