"""Wait for a condition to hold: tests wait on events, never on a fixed duration."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str = "the condition", seconds: float = 30.0) -> T:
    """Poll ``condition`` until it returns something truthy and return that.

    ``seconds`` only bounds a broken test; passing tests never reach it.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)
