"""The control panel served by uvicorn in a background thread on 127.0.0.1."""

from __future__ import annotations

import threading

from devops_cp.web import bind, uvicorn_server
from support.waiting import wait_for


class ServerThread:
    """``with ServerThread(create_app(settings)) as url:`` serves the app until the block ends."""

    def __init__(self, web, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.server = uvicorn_server(web, log_level="warning", access_log=False)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        host_part = f"[{host}]" if ":" in host else host
        self.url = f"http://{host_part}:{self.sock.getsockname()[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start", seconds=60)
        if not self.server.started:
            raise RuntimeError("the web server did not start")
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
