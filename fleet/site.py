"""Where a site keeps its packs, as a client speaks to it: a registry or a served OCI image layout.

    oci://HOST[:PORT]/REPO     the distribution API (plain HTTP on loopback or with plain_http)
    http(s)://HOST/PATH        an OCI image layout served as files: index.json, blobs/sha256/HEX
    DIR                        (mirror only) an OCI image layout written here

Small requests (tags, manifests, HEAD, upload steps) are retried on a dropped connection and on
429/5xx with backoff and jitter, honouring Retry-After. Blobs are fetched by the caller with
executor.http.Download, which resumes. Nothing here trusts what it reads: callers verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from executor.config import Config, HttpSettings
from executor.http import (  # one retry budget for every request
    RETRYABLE_STATUS,
    Attempts,
    Retry,
    retry_after,
    read_limited,
)
from executor.oci import RegistryAuth, is_local_registry
from fleet.artifact import OCI_MANIFEST
from manifests.errors import (
    BundleStructureError,
    ChecksumMismatch,
    ConfigError,
    NetworkError,
    NotWritableError,
    UsageError,
)

MANIFEST_LIMIT = 4 << 20  # the distribution spec's suggested limit
SMALL_LIMIT = MANIFEST_LIMIT
INDEX_LIMIT = 64 << 20  # a layout's index.json: one line per tag
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$")


@dataclass(frozen=True)
class Address:
    kind: str  # "registry", "web" (a served layout) or "dir" (a layout written here)
    text: str  # as the user wrote it
    host: str = ""  # registry HOST[:PORT]
    repository: str = ""
    url: str = ""  # web: the layout's base URL, no trailing slash
    path: Path | None = None  # dir


def parse_address(text: str, *, allow_dir: bool) -> Address:
    usage = "oci://HOST[:PORT]/REPO or an http(s):// URL of a served OCI image layout" + (", or a directory" if allow_dir else "")
    if text.startswith("oci://"):
        host, slash, repository = text[len("oci://") :].partition("/")
        if not slash or not _HOST.match(host) or not _REPOSITORY.match(repository):
            raise UsageError(f"invalid registry address {text!r}", hint="write oci://HOST[:PORT]/REPO, e.g. oci://registry.site:5000/packs (lowercase repository)")
        return Address("registry", text, host=host, repository=repository)
    if text.startswith(("http://", "https://")):
        if not urlsplit(text).hostname:
            raise UsageError(f"invalid URL {text!r}", hint=f"write {usage}")
        return Address("web", text, url=text.rstrip("/"))
    if "://" in text or not allow_dir:
        raise UsageError(f"{text!r} is not a site address", hint=f"write {usage}")
    return Address("dir", text, path=Path(text))


# --- credentials ----------------------------------------------------------------------------


def site_credentials(host: str, config: Config) -> tuple[str, str] | None:
    """A registry's credentials (push, and pull where it asks): [credentials."HOST[:PORT]"] username
    and password in the config, else ~/.docker/config.json `auths` (`docker login` writes them)."""
    table = config.credentials.get(host)
    if table is not None:
        if not isinstance(table.get("username"), str) or not isinstance(table.get("password"), str):
            raise ConfigError(f"{config.path}: [credentials.\"{host}\"] needs username and password", hint="write both as strings")
        return table["username"], table["password"]
    docker = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(docker.read_text()).get("auths", {})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{docker} cannot be read: {exc}", hint="fix it, or put the registry's credentials in the config file's [credentials]") from exc
    for name in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
        entry = auths.get(name) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            user, sep, password = base64.b64decode(entry["auth"]).decode(errors="replace").partition(":")
            if sep:
                return user, password
        if isinstance(entry, dict) and isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
    return None


# --- requests -------------------------------------------------------------------------------


class Endpoint:
    """One site: requests with retries, and what every reader and writer needs to know."""

    def __init__(self, client: httpx.Client, settings: HttpSettings, address: Address, *, plain_http: bool = False, credentials=None, actions: str = "pull"):
        self.client, self.settings, self.address = client, settings, address
        if address.kind == "registry":
            scheme = "http" if plain_http or is_local_registry(address.host) else "https"
            self.base = f"{scheme}://{address.host}/v2/{address.repository}"
            self.auth: httpx.Auth | None = RegistryAuth(client, (self.base, actions), address.repository, actions=actions, credentials=credentials)
        else:
            self.base, self.auth = address.url, None

    def send(self, method: str, url, *, limit: int = SMALL_LIMIT, **kwargs) -> httpx.Response:
        """One small request, its body read (at most `limit` bytes), retried on a dropped connection, 429 and 5xx."""
        attempts = Attempts(str(url), self.settings, hint="the site's server is unreachable or overloaded: run the same command again later")
        while True:
            try:
                with self.client.stream(method, url, auth=self.auth, **kwargs) as response:
                    if response.status_code in RETRYABLE_STATUS:
                        raise Retry(f"HTTP {response.status_code}", retry_after(response.headers.get("retry-after")))
                    body = read_limited(response, limit, str(url))
                return httpx.Response(response.status_code, headers=response.headers, content=body, request=response.request)  # read whole, bounded
            except (httpx.TransportError, Retry) as exc:
                attempts.failed(exc)
            except httpx.HTTPError as exc:
                raise NetworkError(f"{method} {url} failed: {exc}") from exc

    def blob_url(self, digest: str) -> str:
        if self.address.kind == "registry":
            return f"{self.base}/blobs/{digest}"
        return f"{self.base}/blobs/sha256/{digest.split(':', 1)[1]}"


def refused(response: httpx.Response, what: str) -> Exception:
    """A registry's refusal, with the README's exit code: credentials and quota are 5, the rest 6."""
    code = response.status_code
    errors = _error_codes(response)
    detail = f"HTTP {code}" + (f" ({', '.join(errors)})" if errors else "")
    if code in (401, 403) and not any("QUOTA" in e for e in errors):
        return NotWritableError(what, f"the registry refused the credentials: {detail}; put them in ~/.docker/config.json (`docker login`) or the config file's [credentials.\"HOST:PORT\"]")
    if code in (413, 507) or any("QUOTA" in e or "SIZE" in e for e in errors):
        return NotWritableError(what, f"the registry is out of space or over its quota: {detail}")
    return NetworkError(f"{what}: the registry answered {detail}", hint="check the registry's logs")


def _error_codes(response: httpx.Response) -> list[str]:
    try:
        errors = response.json().get("errors", [])
        return [f"{e.get('code')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return []


# --- reading --------------------------------------------------------------------------------


class SiteReader:
    """Tags, manifests and blob URLs of a registry repository or a served layout."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._index: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.endpoint.address.text

    def tags(self) -> list[str]:
        if self.endpoint.address.kind == "web":
            return sorted(self._layout_index())
        tags, url = [], f"{self.endpoint.base}/tags/list?n=1000"
        while url:
            response = self.endpoint.send("GET", url)
            if response.status_code == 404:
                return []  # a repository nothing was pushed into
            if response.status_code != 200:
                raise refused(response, f"listing the tags of {self.name}")
            try:
                listed = response.json().get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise NetworkError(f"{url} did not answer with a tag list", hint="check the site address: oci://HOST[:PORT]/REPO of an OCI registry") from exc
            tags += [t for t in listed if isinstance(t, str)]
            link = response.links.get("next", {}).get("url")  # distribution pages with Link: <...>; rel="next"
            url = str(response.url.join(link)) if link else ""
        return sorted(tags)

    def _layout_index(self) -> dict[str, str]:
        if self._index is None:
            url = f"{self.endpoint.base}/index.json"
            response = self.endpoint.send("GET", url, limit=INDEX_LIMIT)
            if response.status_code != 200:
                raise NetworkError(f"{url}: HTTP {response.status_code}", hint="check the site address: it should be the folder `devops-cp data mirror --to DIR` wrote, as served")
            try:
                data = json.loads(response.content)
            except ValueError as exc:
                raise NetworkError(f"{url} is not an OCI image index", hint="the URL should be the folder `devops-cp data mirror --to DIR` wrote") from exc
            entries = data.get("manifests") if isinstance(data, dict) else None
            self._index = {}
            for entry in entries if isinstance(entries, list) else []:
                name = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name") if isinstance(entry, dict) else None
                if isinstance(name, str) and isinstance(entry.get("digest"), str):
                    self._index[name] = entry["digest"]
        return self._index

    def manifest(self, tag: str) -> tuple[dict, str] | None:
        """(manifest, its digest) under `tag`, or None when the site has no such tag."""
        if self.endpoint.address.kind == "web":
            digest = self._layout_index().get(tag)
            if digest is None:
                return None
            url, headers = self.endpoint.blob_url(digest), {}
        else:
            digest, url, headers = None, f"{self.endpoint.base}/manifests/{tag}", {"Accept": OCI_MANIFEST}
        response = self.endpoint.send("GET", url, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise refused(response, f"manifest {tag} at {self.name}")
        body = response.content
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = digest or response.headers.get("docker-content-digest") or actual
        if claimed != actual:
            raise ChecksumMismatch(f"manifest {tag} from {url}", claimed.split(":", 1)[-1], actual.split(":", 1)[1])
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise NetworkError(f"{url} is not an OCI manifest", hint="the site's copy is damaged: publish it again with `devops-cp data mirror`")
        return data, actual

    def small_blob(self, digest: str, size: int, limit: int) -> bytes:
        """A blob read into memory (the signed manifest, its signature), checked against its digest."""
        url = self.endpoint.blob_url(digest)
        if size > limit:
            raise BundleStructureError(f"{url}: {size} bytes is more than {limit}, the most this blob may hold")
        response = self.endpoint.send("GET", url, limit=size)
        if response.status_code != 200:
            raise refused(response, f"blob {digest} at {self.name}")
        actual = hashlib.sha256(response.content).hexdigest()
        if "sha256:" + actual != digest:
            raise ChecksumMismatch(f"blob {digest} from {url}", digest.split(":", 1)[1], actual)
        return response.content
