"""A real registry for tests: Debian's `docker-registry` (github.com/docker/distribution) on
127.0.0.1, and the distribution API calls that push an artifact into it. Used by
tests/test_oci.py and tests/test_trivy_bundle.py. The `registry` fixture is registered in conftest.py.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from executor.oci import OCI_MANIFEST


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real docker-registry on 127.0.0.1:<free port>, no auth, storage in a temp dir."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (apt-get install -y docker-registry; .ci/run does it)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(root / "registry.log", "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"docker-registry did not start on 127.0.0.1:{port}: {(root / 'registry.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def push(registry: str, name: str, tag: str, manifest: bytes, blobs: dict[str, bytes], media_type: str = OCI_MANIFEST) -> str:
    """The distribution API: POST an upload, PUT it with ?digest=, then PUT the manifest."""
    base = f"http://{registry}"
    with httpx.Client(timeout=30, trust_env=False) as client:
        for blob_digest, data in blobs.items():
            started = client.post(f"{base}/v2/{name}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = started.url.join(started.headers["location"]).copy_merge_params({"digest": blob_digest})
            done = client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
            assert done.status_code == 201, done.text
        stored = client.put(f"{base}/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": media_type})
        assert stored.status_code == 201, stored.text
        assert stored.headers["docker-content-digest"] == digest(manifest)
    return digest(manifest)
