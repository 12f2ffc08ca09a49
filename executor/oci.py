"""OCI artifacts over the distribution API, natively (no oras, no trivy on the online machine).

    ref "ghcr.io/aquasecurity/trivy-db:2"
      -> GET /v2/<name>/manifests/<tag>       (anonymous bearer token when the registry asks)
      -> the layer whose mediaType is the step's layer_media_type
      -> GET /v2/<name>/blobs/<digest>        (executor.http.Download: resumable, capped at the
                                               descriptor's size, verified against the digest)
      -> executor.steps.place_file            (extracted into the pack transaction)

Content addressing is the checksum: a blob is trusted only when its sha256 equals the
digest in the manifest, and a manifest fetched by digest only when its bytes hash to it.
Fallback refs are tried in order when a registry cannot deliver (`NetworkError`); a blob
that arrives but does not verify (`TrustError`) stops the step, it is never papered over
by another registry.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator

import httpx

from executor.config import rewrite_url
from executor.events import Meter, Notice
from executor.http import Download, fetch_small, read_limited
from executor.preflight import check_space
from executor.steps import StepContext, StepOutcome, partial_path, place_file, step_label
from executor.txn import PackTransaction
from manifests.errors import ChecksumMismatch, FileTooLargeError, NetworkError, NoSpaceError, NotWritableError, TrustError, UsageError
from manifests.steps import OciArtifact

__all__ = [
    "OCI_MANIFEST",
    "DOCKER_MANIFEST",
    "OCI_INDEX",
    "DOCKER_MANIFEST_LIST",
    "OCI_EMPTY",
    "Artifact",
    "artifact_type",
    "Descriptor",
    "LayerNotFound",
    "OciRef",
    "parse_bearer_challenge",
    "RegistryAuth",
    "is_local_registry",
    "parse_ref",
    "registry_base",
    "resolve_artifact",
    "run_oci_artifact",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"  # oras >= 1.1: the artifact type moves to `artifactType`
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST))
MANIFEST_LIMIT = 4 << 20  # the OCI distribution spec's suggested manifest size limit
TOKEN_LIMIT = 1 << 20

DOCKER_HUB = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", DOCKER_HUB)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class LayerNotFound(UsageError):
    """The artifact has no layer of the media type the recipe asks for (exit 2: fix the recipe or ref)."""


# --- references ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OciRef:
    registry: str  # host[:port] as spoken to; Docker Hub is registry-1.docker.io
    repository: str  # "aquasecurity/trivy-db"; Docker Hub single names get "library/"
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _bad_ref(text: str, problem: str) -> UsageError:
    return UsageError(f"invalid OCI reference {text!r}: {problem}", hint="write it as REGISTRY/NAME:TAG, e.g. ghcr.io/aquasecurity/trivy-db:2")


def parse_ref(text: str) -> OciRef:
    """Docker's reference grammar: [registry/]name[:tag][@digest]."""
    rest, digest = text.strip(), None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise _bad_ref(text, f"{digest!r} is not a digest (algorithm:hex)")
    first, slash, remainder = rest.partition("/")
    # As Docker: the first component is a registry host when it looks like one.
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, name = first, remainder
    else:
        registry, name = "docker.io", rest
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG.match(tag):
            raise _bad_ref(text, f"{tag!r} is not a valid tag")
    if not name or not all(_COMPONENT.match(part) for part in name.split("/")):
        raise _bad_ref(text, f"{name!r} is not a valid repository name (lowercase letters, digits, '.', '_', '-', '/')")
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in name:
            name = f"library/{name}"
    if tag is None and digest is None:
        tag = "latest"
    return OciRef(registry, name, tag, digest)


def _hostname(host_port: str) -> str:
    if host_port.startswith("["):
        return host_port[1 : host_port.find("]")]
    return host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port


def is_local_registry(host_port: str) -> bool:
    """As Docker: localhost and loopback addresses (any port) are spoken to over plain HTTP."""
    host = _hostname(host_port).lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_base(registry: str, mirrors: dict[str, str]) -> str:
    """`scheme://host[:port]` for a registry; a [mirrors] entry keyed by the registry host
    (value: a host or a URL) replaces it. URL-prefix mirrors apply later, to each full URL."""
    aliases = _DOCKER_HUB_ALIASES if registry == DOCKER_HUB else (registry,)
    target = next((mirrors[a] for a in aliases if a in mirrors), registry)
    if "://" in target:
        return target.rstrip("/")
    return f"{'http' if is_local_registry(target) else 'https'}://{target.rstrip('/')}"


# --- anonymous bearer tokens ----------------------------------------------------------------

_token_caches: "weakref.WeakKeyDictionary[httpx.Client, dict]" = weakref.WeakKeyDictionary()
_token_caches_lock = threading.Lock()


def _token_cache(client: httpx.Client) -> dict:
    """Tokens live as long as the run's client: one cache per run, shared by its threads."""
    with _token_caches_lock:
        return _token_caches.setdefault(client, {})


def parse_bearer_challenge(header: str) -> dict[str, str] | None:
    """`Bearer realm="...",service="...",scope="..."` -> its parameters; None for other schemes."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = {k.lower(): v1 if v1 or q else v2 for k, q, v1, v2 in re.findall(r'(\w+)=(?:(")((?:[^"\\]|\\.)*)"|([^,\s]*))', params)}
    return found if found.get("realm") else None


class RegistryAuth(httpx.Auth):
    """The distribution spec's token flow (anonymous, or with credentials for a push) as an httpx
    auth flow, so both the bounded manifest fetch and the resumable blob Download use it unchanged.

    A cached token goes out first; a 401 with a Bearer challenge fetches a fresh one from the
    realm (a request of its own on the same client) and retries once. httpx drops
    Authorization on a redirect to another host, so the token never reaches a blob storage host."""

    def __init__(self, client: httpx.Client, key: tuple[str, str], repository: str, *, actions: str = "pull", credentials: tuple[str, str] | None = None):
        """`credentials` (username, password): sent to the token endpoint, or to a registry that
        asks for Basic auth; None: anonymous. `actions`: the scope asked for when the challenge names none."""
        self.client, self.cache, self.key, self.repository = client, _token_cache(client), key, repository
        self.actions = actions
        self.basic = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else None

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        token = self.cache.get(self.key)
        if token:
            request.headers["Authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        header = response.headers.get("www-authenticate", "")
        challenge = parse_bearer_challenge(header)
        if challenge is None:
            if self.basic and header.strip().lower().startswith("basic") and request.headers.get("Authorization") != self.basic:
                self.cache[self.key] = request.headers["Authorization"] = self.basic
                yield request
            return  # no credentials for Basic, or no challenge: the caller reports the 401
        realm = httpx.URL(challenge["realm"])
        if realm.scheme not in ("http", "https"):
            raise NetworkError(f"{request.url.host} asks for a token from {realm}, which is refused", hint="only http and https token endpoints are used")
        params = {"scope": challenge.get("scope") or f"repository:{self.repository}:{self.actions}"}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        token = self._fetch_token(realm.copy_merge_params(params))
        self.cache[self.key] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _fetch_token(self, url: httpx.URL) -> str:
        headers = {"Authorization": self.basic} if self.basic else {}
        with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                if self.basic and response.status_code in (401, 403):
                    raise NotWritableError(str(url), f"the registry's token endpoint refused the credentials (HTTP {response.status_code})")
                raise NetworkError(
                    f"the registry's token endpoint {url} answered HTTP {response.status_code}",
                    hint="anonymous pulls were refused: the artifact may be private, or the registry rate-limits anonymous pulls",
                )
            body = read_limited(response, TOKEN_LIMIT, f"the token from {url}")
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise NetworkError(f"the token endpoint {url} answered without a token", hint="it should answer JSON with `token` or `access_token`")
        return token


# --- manifests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    title: str = ""  # annotation org.opencontainers.image.title (e.g. db.tar.gz)

    @property
    def sha256(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Artifact:
    """What a ref resolved to: the manifest's digest, its artifact type and the chosen layer."""

    ref: OciRef
    manifest_digest: str
    artifact_type: str | None
    layer: Descriptor
    blob_url: str
    auth: RegistryAuth


class _Registry:
    """One repository on one registry (after mirrors), with its token."""

    def __init__(self, client: httpx.Client, ref: OciRef, mirrors: dict[str, str]):
        self.client, self.ref, self.mirrors = client, ref, mirrors
        self.base = registry_base(ref.registry, mirrors)
        self.auth = RegistryAuth(client, (self.base, ref.repository), ref.repository)

    def url(self, kind: str, reference: str) -> str:
        return rewrite_url(f"{self.base}/v2/{self.ref.repository}/{kind}/{reference}", self.mirrors)

    def manifest(self, reference: str) -> tuple[dict, str]:
        """(manifest JSON, its digest). By digest, the bytes must hash to it."""
        url = self.url("manifests", reference)
        response = fetch_small(self.client, url, limit=MANIFEST_LIMIT, auth=self.auth, headers={"Accept": MANIFEST_ACCEPT})
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ":" in reference:  # pinned by digest: the bytes must hash to it
            if not _SHA256_DIGEST.match(reference):
                raise TrustError(f"{self.ref}: cannot verify a manifest pinned by {reference}", hint="pin it by its sha256 digest")
            claimed = reference
        else:  # by tag: nothing to verify against but the registry's own header, when it sends one
            claimed = response.headers.get("docker-content-digest", "")
        if _SHA256_DIGEST.match(claimed) and claimed != digest:
            raise ChecksumMismatch(f"manifest {self.ref.repository}@{claimed} from {url}", claimed.split(":", 1)[1], digest.split(":", 1)[1])
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise NetworkError(f"{url} did not answer with an OCI manifest", hint="check the ref, or the mirror configured for this registry")
        if not isinstance(data.get("mediaType"), str):
            data["mediaType"] = response.headers.get("content-type", "").split(";")[0].strip()
        return data, digest


def _descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict) or not isinstance(raw.get("mediaType"), str) or not isinstance(raw.get("size"), int) or isinstance(raw.get("size"), bool):
        raise NetworkError(f"{where}: malformed descriptor {raw!r}", hint="the registry's manifest is not a valid OCI manifest")
    digest = raw.get("digest")
    if not isinstance(digest, str) or not _SHA256_DIGEST.match(digest) or raw["size"] < 0:
        raise TrustError(f"{where}: layer digest {digest!r} (size {raw['size']}) cannot be verified", hint="only sha256 digests are supported; nothing was installed")
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    return Descriptor(raw["mediaType"], digest, raw["size"], str(annotations.get("org.opencontainers.image.title", "")))


def artifact_type(manifest: dict) -> str | None:
    """oras >= 1.1 writes `artifactType` (with an empty config); oras 1.0 the config's mediaType."""
    if isinstance(manifest.get("artifactType"), str):
        return manifest["artifactType"]
    config = manifest.get("config")
    media_type = config.get("mediaType") if isinstance(config, dict) else None
    return media_type if isinstance(media_type, str) and media_type != OCI_EMPTY else None


def resolve_artifact(client: httpx.Client, ref: OciRef, layer_media_type: str, mirrors: dict[str, str]) -> Artifact:
    """Manifest (through an index if the tag names one) -> the layer to pull. No blob bytes yet."""
    registry = _Registry(client, ref, mirrors)
    manifest, digest = registry.manifest(ref.reference)
    if manifest["mediaType"] in (OCI_INDEX, DOCKER_MANIFEST_LIST) or ("manifests" in manifest and "layers" not in manifest):
        entries = manifest.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise NetworkError(f"{ref} is an empty image index", hint="the artifact was not pushed completely")
        manifest, digest = registry.manifest(_entry_digest(entries[0], str(ref)))  # artifacts are single-platform
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise NetworkError(f"{ref}: the manifest lists no layers", hint="the registry's manifest is not a valid OCI manifest")
    kind = artifact_type(manifest)
    found = [layer.get("mediaType", "?") if isinstance(layer, dict) else "?" for layer in layers]
    if layer_media_type not in found:
        raise LayerNotFound(
            f"{ref} ({kind or 'no artifact type'}) has no layer of media type {layer_media_type}; "
            f"its layers: {', '.join(found) or 'none'}",
            hint="check the recipe's layer_media_type and ref",
        )
    layer = _descriptor(layers[found.index(layer_media_type)], str(ref))
    return Artifact(ref, digest, kind, layer, registry.url("blobs", layer.digest), registry.auth)


def _entry_digest(raw: object, where: str) -> str:
    digest = raw.get("digest") if isinstance(raw, dict) else None
    if not isinstance(digest, str) or not _SHA256_DIGEST.match(digest):
        raise TrustError(f"{where}: index entry digest {digest!r} cannot be verified", hint="only sha256 digests are supported")
    return digest


# --- the step -------------------------------------------------------------------------------


def _pull(ctx: StepContext, key: str, index: int, step: OciArtifact, txn: PackTransaction, ref: OciRef, tried: list[Download]) -> StepOutcome:
    artifact = resolve_artifact(ctx.client, ref, step.layer_media_type, ctx.config.mirrors)
    layer, data_dir = artifact.layer, txn.data_dir
    extra = (step.unpacked_size_bytes or 0) if step.extract else 0
    meter = Meter(ctx.listener, key, index, step_label(step), layer.size)
    download = Download(
        client=ctx.client,
        url=artifact.blob_url,
        partial=partial_path(data_dir, artifact.blob_url),
        what=f"layer {layer.digest} of {ref}",
        settings=ctx.settings,
        meter=meter,
        size_cap=layer.size,  # exact: the descriptor's size
        auth=artifact.auth,
        space_check=lambda remaining: check_space(data_dir, remaining + extra),
        writeback=ctx.will_sync and not step.extract,  # an archive is read back to be extracted, never made visible
        plain=ctx.plain,
        connections=ctx.connections,
    )
    tried.append(download)
    try:
        copy = download.run(layer.sha256)  # content addressing: the digest is the checksum
    except (NoSpaceError, FileTooLargeError, TrustError):
        download.discard()  # a blob that is too long (or no room for it) must not be resumed next run
        raise
    place_file(download.partial, step, txn, copy, meter)
    download.discard()
    return StepOutcome(source=f"oci:{ref}@{artifact.manifest_digest}", checksum_verified=True)


def run_oci_artifact(ctx: StepContext, key: str, index: int, step: OciArtifact, txn: PackTransaction) -> StepOutcome:
    """Pull `step.ref` (then each of `step.fallback_refs` while registries cannot deliver)."""
    refs = [parse_ref(text) for text in (step.ref, *step.fallback_refs)]  # all refs valid before any request
    tried: list[Download] = []
    failures: list[tuple[OciRef, NetworkError]] = []
    for number, ref in enumerate(refs):
        try:
            outcome = _pull(ctx, key, index, step, txn, ref, tried)
        except NetworkError as exc:
            failures.append((ref, exc))
            if number + 1 < len(refs):
                ctx.listener(Notice(key, "warning", f"{ref}: {exc.message}; trying {refs[number + 1]}"))
            continue
        for download in tried:
            download.discard()  # partial blobs from registries that failed are of no further use
        outcome.notes.extend(f"{failed} could not be used ({exc.message}); pulled from {ref} instead" for failed, exc in failures)
        return outcome
    if len(failures) == 1:
        raise failures[0][1]
    raise NetworkError(
        f"none of the registries for {step.ref} could deliver it:\n" + "\n".join(f"    {ref}: {exc.message}" for ref, exc in failures),
        hint="check the network or the [mirrors] in the config file; partial downloads are kept for a rerun",
    ) from failures[-1][1]
