"""A real registry for tests: Debian's `docker-registry` (github.com/docker/distribution) on
127.0.0.1, and the distribution API calls that push an artifact into it. Used by
tests/test_oci.py and tests/test_trivy_bundle.py. The `registry` fixture is registered in conftest.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from executor.oci import OCI_MANIFEST


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryAddress(str):
    """HOST:PORT, and where the registry keeps its files (a test may alter a blob there)."""

    def __new__(cls, address: str, storage: Path):
        self = super().__new__(cls, address)
        self.storage = storage
        return self

    def blob_file(self, digest: str) -> Path:
        hex_digest = digest.split(":", 1)[1]
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


@contextlib.contextmanager
def run_registry(root: Path, users: dict[str, str] | None = None) -> Iterator[RegistryAddress]:
    """docker-registry on 127.0.0.1:<free port>, storage under `root`; with `users`, htpasswd (Basic) auth."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (apt-get install -y docker-registry; .ci/run does it)")
    port = free_port()
    auth = ""
    if users:
        import bcrypt  # the only password format the registry reads

        (root / "htpasswd").write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = open(root / "registry.log", "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2, trust_env=False).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"docker-registry did not start on 127.0.0.1:{port}: {(root / 'registry.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield RegistryAddress(f"127.0.0.1:{port}", root / "storage")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real docker-registry on 127.0.0.1:<free port>, no auth, storage in a temp dir."""
    with run_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


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
