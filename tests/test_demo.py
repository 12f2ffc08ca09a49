"""`devops-cp data demo` end to end, and the small server it brings (devops_cp/demo_server.py)."""

from __future__ import annotations

import httpx

from devops_cp.demo_server import DemoServer


def test_the_demo_installs_both_sample_packs(cli):
    result = cli("demo", "--size", "1MiB", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert "installed sample-model: 1 file(s), 1.0 MiB, sha256 verified" in result.stdout
    assert "installed sample-db" in result.stdout
    assert "demo finished" in result.stdout


def test_the_demo_server_serves_whole_files_and_one_range():
    data = bytes(range(256)) * 1000
    with DemoServer(bytes_per_second=50_000_000) as server, httpx.Client(trust_env=False, timeout=10) as client:
        url = server.add("/packs/a.bin", data)
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"]
        tail = client.get(url, headers={"Range": "bytes=1000-"})
        assert tail.status_code == 206 and tail.content == data[1000:]
        assert tail.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        middle = client.get(url, headers={"Range": "bytes=10-19"})
        assert middle.content == data[10:20]
        assert client.head(url).headers["content-length"] == str(len(data))
        assert client.get(server.base_url + "/nope").status_code == 404
