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


HANDSHAKES = 1000


def test_no_wake_up_is_lost_between_the_executor_thread_and_the_stream(env, monkeypatch):
    """Each progress event is published from a job thread only once the SSE client has read the one
    before, so every event waits on exactly one wake-up of the stream. The keep-alive, which re-reads
    the job and would make up for a lost wake-up 15 s late, is pushed out of reach: a lost wake-up
    leaves the client waiting, the job gives up waiting for it, and the test fails."""
    import json

    import httpx

    from devops_cp import web as web_module
    from devops_cp.web import create_app, web_settings
    from executor.config import load_config
    from executor.events import Progress
    from support.webserver import ServerThread

    monkeypatch.setattr(web_module, "KEEPALIVE_SECONDS", 3600.0)
    settings, _ = web_settings(load_config(), host="127.0.0.1")
    app = create_app(settings)
    read = threading.Condition()
    last_read = [-1]

    def work(job) -> tuple[bool, dict]:
        for k in range(HANDSHAKES):
            job.listener(Progress("p", 0, "file", k, HANDSHAKES, k * 100 // HANDSHAKES, 1.0, None))
            with read:
                if not read.wait_for(lambda k=k: last_read[0] >= k, timeout=60):  # bounds a broken run only
                    return False, {"message": f"the stream never carried event {k}"}
        return True, {"message": "all read"}

    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120, trust_env=False) as http:
        job = app.state.panel.jobs.start("install", "handshakes", ["p"], work)
        final = None
        with http.stream("GET", f"/api/jobs/{job.id}/events") as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if kind == "progress":
                        with read:
                            last_read[0] = data["downloaded"]
                            read.notify_all()
                    else:
                        final = (kind, data)
    assert final == ("success", {"message": "all read"}), final
