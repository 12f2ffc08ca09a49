"""Writing artifacts into a site: a registry (distribution API) or an OCI image layout on disk.

Both take blobs first and manifests with their tags last (`put_manifests`), so a site never
shows a tag whose blobs are missing. A blob is written through `BlobWriter`: bytes in, then
`commit(digest)` only after the caller verified them; anything else abandons it.

Registry uploads go in chunks (POST, PATCH each chunk with its Content-Range, PUT ?digest=).
A chunk is kept in memory until the registry took it: a PATCH that fails asks the upload's
status (GET: `Range: 0-N`) and sends the rest of the chunk again, so a large blob resumes
after a dropped connection instead of starting over. A blob the site has already (HEAD) is
not uploaded twice, which also makes a second run of a half-finished mirror finish it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import httpx

from executor import durable
from fleet.artifact import CREATED, OCI_MANIFEST
from fleet.site import Endpoint, refused
from manifests.errors import NetworkError, NotWritableError

CHUNK = 16 << 20
PIECE = 1 << 20  # what one socket write is handed
_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")


class RegistryWriter:
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.where = endpoint.address.text

    def has_blob(self, digest: str) -> bool:
        response = self.endpoint.send("HEAD", self.endpoint.blob_url(digest))
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise refused(response, f"checking blob {digest} at {self.where}")

    def blob_writer(self) -> RegistryUpload:
        return RegistryUpload(self)

    def latest_created(self, tag: str) -> str | None:
        """The creation time the manifest now under `tag` claims (to move `latest` only forward)."""
        response = self.endpoint.send("GET", f"{self.endpoint.base}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        if response.status_code != 200:
            return None
        try:
            return str(response.json().get("annotations", {}).get(CREATED) or "") or None
        except (ValueError, AttributeError):
            return None

    def put_manifests(self, manifests: list[tuple[bytes, list[str]]]) -> None:
        for data, tags in manifests:
            for tag in tags:
                url = f"{self.endpoint.base}/manifests/{tag}"
                response = self.endpoint.send("PUT", url, content=data, headers={"Content-Type": OCI_MANIFEST})
                if response.status_code != 201:
                    raise refused(response, f"pushing manifest {tag} to {self.where}")


class RegistryUpload:
    """One blob going up in chunks; `commit(digest)` finishes it, `abandon()` cancels it."""

    def __init__(self, writer: RegistryWriter):
        self.endpoint, self.where = writer.endpoint, writer.where
        self.location: str | None = None
        self.sent = 0  # bytes the registry holds
        self.buffer = bytearray()

    def __enter__(self) -> RegistryUpload:
        response = self.endpoint.send("POST", f"{self.endpoint.base}/blobs/uploads/")
        if response.status_code != 202:
            raise refused(response, f"starting an upload to {self.where}")
        self.location = self._location(response)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.location is not None:
            try:
                self.endpoint.client.request("DELETE", self.location, auth=self.endpoint.auth)  # best effort: the registry expires it anyway
            except httpx.HTTPError:
                pass

    @staticmethod
    def _location(response: httpx.Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise NetworkError(f"{response.url} answered {response.status_code} without a Location", hint="this does not look like an OCI registry")
        return str(response.url.join(location))

    def write(self, data) -> int:
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self._send_chunk()
        return len(data)

    def flush(self) -> None:
        pass  # chunks go when full; the last one with commit()

    def _send_chunk(self) -> None:
        offset = 0  # of self.buffer, already at the registry
        failures = 0
        while offset < len(self.buffer):
            start = self.sent + offset
            end = self.sent + len(self.buffer) - 1
            try:
                response = self.endpoint.client.request(
                    "PATCH",
                    self.location,
                    auth=self.endpoint.auth,
                    content=self._pieces(offset),
                    headers={"Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end}", "Content-Length": str(end - start + 1)},
                )
            except httpx.TransportError as exc:
                failures += 1
                offset = self._resume_point(failures, exc)
                continue
            if response.status_code == 202:
                self.location = self._location(response)
                offset = len(self.buffer)
            elif response.status_code in (408, 429, 500, 502, 503, 504):
                failures += 1
                offset = self._resume_point(failures, NetworkError(f"HTTP {response.status_code}"))
            else:
                raise refused(response, f"uploading to {self.where}")
        self.sent += len(self.buffer)
        self.buffer.clear()

    def _pieces(self, offset: int):
        """The chunk from `offset` a piece at a time: one bytes object of the whole chunk would be
        copied again and again as the socket takes it, and the process grew by hundreds of MiB."""
        for at in range(offset, len(self.buffer), PIECE):
            yield bytes(self.buffer[at : at + PIECE])

    def _resume_point(self, failures: int, exc: Exception) -> int:
        """After a failed PATCH: how much of the buffered chunk the registry holds (GET the upload's status)."""
        if failures > self.endpoint.settings.retries:
            raise NetworkError(f"uploading to {self.where} failed after {failures} attempts: {exc}", hint="run the same command again: blobs already uploaded are not sent twice")
        self.endpoint.settings.sleep(min(self.endpoint.settings.max_backoff, self.endpoint.settings.backoff * 2 ** (failures - 1)))
        response = self.endpoint.send("GET", self.location)
        if response.status_code in (400, 404):  # docker-registry: the Location went stale with an answer that was lost
            raise NetworkError(
                f"uploading to {self.where} failed ({exc}) and the registry no longer knows the upload (HTTP {response.status_code})",
                hint="run the same command again: blobs already uploaded are not sent twice",
            )
        if response.status_code != 204:
            raise refused(response, f"resuming an upload to {self.where}")
        self.location = self._location(response)
        match = _RANGE.match(response.headers.get("range", ""))
        held = int(match.group(1)) + 1 if match else 0
        if held == 1 and self.sent == 0:
            held = 0  # docker-registry says 0-0 for an empty upload too: send the chunk whole (it refuses an overlap)
        if not self.sent <= held <= self.sent + len(self.buffer):
            raise NetworkError(f"the upload to {self.where} holds {held} bytes, not what was sent", hint="run the same command again")
        return held - self.sent

    def commit(self, digest: str) -> None:
        """The last bytes and the digest; a blob smaller than a chunk goes up whole with it."""
        body = b""
        if self.sent == 0:  # smaller than a chunk: its bytes go with the digest, in one request
            body = bytes(self.buffer)
            self.buffer.clear()
        elif self.buffer:
            self._send_chunk()
        url = httpx.URL(self.location).copy_merge_params({"digest": digest})
        response = self.endpoint.send("PUT", url, content=body, headers={"Content-Type": "application/octet-stream"})
        if response.status_code != 201:
            raise refused(response, f"finishing the upload of {digest} to {self.where}")
        self.location = None


class LayoutWriter:
    """An OCI image layout in a directory: blobs/sha256/HEX, index.json (rewritten atomically, last)."""

    def __init__(self, root: Path):
        self.root = root
        self.where = str(root)
        self.blobs = root / "blobs" / "sha256"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotWritableError(str(root), exc.strerror or str(exc)) from exc
        layout = root / "oci-layout"
        if not layout.exists():
            durable.write_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')

    def has_blob(self, digest: str) -> bool:
        return (self.blobs / digest.split(":", 1)[1]).is_file()

    def blob_writer(self) -> LayoutBlob:
        return LayoutBlob(self)

    def _index(self) -> dict:
        path = self.root / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        return json.loads(path.read_bytes())

    def latest_created(self, tag: str) -> str | None:
        for entry in self._index()["manifests"]:
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return entry.get("annotations", {}).get(CREATED)
        return None

    def put_manifests(self, manifests: list[tuple[bytes, list[str]]]) -> None:
        index = self._index()
        for data, tags in manifests:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blob = self.blobs / digest.split(":", 1)[1]
            if not blob.exists():
                durable.write_atomic(blob, data)
            created = json.loads(data).get("annotations", {}).get(CREATED)
            index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") not in tags]
            for tag in tags:
                annotations = {"org.opencontainers.image.ref.name": tag, **({CREATED: created} if created else {})}
                index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data), "annotations": annotations})
        index["manifests"].sort(key=lambda m: m["annotations"]["org.opencontainers.image.ref.name"])
        durable.write_atomic(self.root / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())


class LayoutBlob:
    """A blob written beside its final name, renamed there once committed."""

    def __init__(self, writer: LayoutWriter):
        self.writer = writer
        self.file = None

    def __enter__(self) -> LayoutBlob:
        fd, name = tempfile.mkstemp(prefix=".incoming-", dir=self.writer.blobs)
        self.file, self.path = os.fdopen(fd, "wb"), Path(name)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)  # committed: already renamed

    def write(self, data) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def commit(self, digest: str) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        os.replace(self.path, self.writer.blobs / digest.split(":", 1)[1])
