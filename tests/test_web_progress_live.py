"""The web page's progress is live: every SSE client sees progress as the executor reports it.

A real paced server (64 KiB chunks, a pause between them), a real control panel on 127.0.0.1 and
several real SSE clients at once, many runs over. No timed assertion: the test counts events per
bytes moved. Every chunk is reported by the executor (its pause is longer than the meter's
interval), so a client that sees no progress for more than CHUNKS_PER_SECOND chunks (a second of
data) has lost events: a lost wake-up or coalescing between the executor thread and the event loop.
"""

from __future__ import annotations

import itertools
import threading

import pytest
import test_web
from test_web import AUTH, add_pack, read_events, sample, start_install

# test_web's fixtures, used here as they are: an isolated env, the paced file server, the panel
env, files, web, client = test_web.env, test_web.files, test_web.web, test_web.client

CHUNK = 64 * 1024  # the paced server's chunk
PAUSE = 0.25  # seconds between chunks: 256 KiB a second
CHUNKS_PER_SECOND = 4
CHUNKS = 12
CLIENTS = 3


def _progress(events: list[dict]) -> list[int]:
    return [e["data"]["downloaded"] for e in events if e["event"] == "progress"]


@pytest.mark.parametrize("run", range(5))
def test_every_client_sees_progress_at_least_once_a_second_of_data(env, files, client, run):
    data = sample(CHUNKS * CHUNK, seed=run)
    add_pack(env, files, f"live{run}", data, delay=PAUSE)
    job = start_install(client, f"live{run}")

    streams: list[list[dict]] = [[] for _ in range(CLIENTS)]
    readers = [threading.Thread(target=lambda out=out: out.extend(read_events(client, job, headers=AUTH))) for out in streams]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(120)

    for events in streams:
        assert events[-1]["event"] == "success", events[-1]
        seen = _progress(events)
        assert seen == sorted(seen) and seen[-1] == len(data)
        moving = [d for d in seen if 0 < d < len(data)]
        assert len(set(moving)) >= CHUNKS // 2, f"only {len(set(moving))} progress events for {CHUNKS} chunks: {seen}"
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert max(gaps) <= CHUNKS_PER_SECOND * CHUNK, f"no progress for {max(gaps)} bytes (more than a second of data): {seen}"
