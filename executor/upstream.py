"""Has a moving target's upstream changed since it was fetched? Asked of the server, not guessed.

Every download keeps its validators in the install record (`extra["upstream"]`): the URL asked,
the URL that answered after redirects, its ETag and Last-Modified. A later `install` of the
intact pack, and `check-updates`, ask that URL again with a conditional HEAD (If-None-Match,
If-Modified-Since): a 304, or the same validators from the same place, is "unchanged"; other
validators or another place is "changed"; no answer is "unreachable" (the installed pack stays);
an answer without validators is "undecided" (the caller falls back to the schedule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # httpx is loaded by the first request, never by a sideload
    import httpx

UPSTREAM_KEY = "upstream"  # in the install record's `extra`: a list of Validators.to_json()

UNCHANGED, CHANGED, UNREACHABLE, UNDECIDED = "unchanged", "changed", "unreachable", "undecided"


@dataclass(frozen=True)
class Validators:
    url: str  # the URL fetched (after [mirrors])
    final_url: str  # where it led after redirects
    etag: str | None
    last_modified: str | None

    @classmethod
    def of_response(cls, url: str, response: httpx.Response) -> "Validators":
        return cls(url, str(response.url), response.headers.get("etag"), response.headers.get("last-modified"))

    @classmethod
    def from_json(cls, data: object) -> "Validators | None":
        """None for anything that is not what to_json() wrote (a hand-edited record)."""
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("url", "final_url")):
            return None
        etag, modified = data.get("etag"), data.get("last_modified")
        if not all(v is None or isinstance(v, str) for v in (etag, modified)):
            return None
        return cls(data["url"], data["final_url"], etag, modified)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def usable(self) -> bool:
        return bool(self.etag or self.last_modified)

    def conditional_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class Answer:
    state: str  # UNCHANGED, CHANGED, UNREACHABLE or UNDECIDED
    detail: str = ""


def recorded(extra: dict) -> dict[str, Validators]:
    """The validators an install record holds, by the URL fetched."""
    entries = extra.get(UPSTREAM_KEY)
    found = [Validators.from_json(e) for e in entries] if isinstance(entries, list) else []
    return {v.url: v for v in found if v is not None}


def ask(client: httpx.Client, checks: list[tuple[Validators, httpx.Auth | None]]) -> Answer:
    """Every file unchanged: UNCHANGED; else the first answer that is not."""
    for validators, auth in checks:
        answer = ask_one(client, validators, auth)
        if answer.state != UNCHANGED:
            return answer
    return Answer(UNCHANGED)


# Some servers answer GET only (a URL signed for GET refuses HEAD): then a conditional GET whose
# body is never read.
_HEAD_REFUSED = {403, 405, 501}


def ask_one(client: httpx.Client, validators: Validators, auth: httpx.Auth | None) -> Answer:
    import httpx

    headers = validators.conditional_headers()
    try:
        response = client.head(validators.url, headers=headers, auth=auth)
        if response.status_code in _HEAD_REFUSED:
            with client.stream("GET", validators.url, headers=headers, auth=auth) as response:
                return compare(validators, response)
        return compare(validators, response)
    except httpx.HTTPError as exc:
        return Answer(UNREACHABLE, f"{validators.url}: {exc or type(exc).__name__}")


def compare(validators: Validators, response: httpx.Response) -> Answer:
    code = response.status_code
    if code == 304:
        return Answer(UNCHANGED)
    if code not in (200, 206):
        return Answer(UNREACHABLE, f"{validators.url}: HTTP {code}")
    final = str(response.url)
    if _place(final) != _place(validators.final_url):
        return Answer(CHANGED, f"{validators.url} now leads to {_place(final)}")
    etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
    if validators.etag and etag:
        same = _weak(etag) == _weak(validators.etag)
        return Answer(UNCHANGED) if same else Answer(CHANGED, f"ETag {validators.etag} is now {etag}")
    if validators.last_modified and modified:
        same = modified == validators.last_modified
        return Answer(UNCHANGED) if same else Answer(CHANGED, f"Last-Modified {validators.last_modified} is now {modified}")
    return Answer(UNDECIDED, f"{validators.url} answered without the validators it had")


def _place(url: str) -> str:
    """A URL without its query: a signed redirect target's signature changes on every request."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _weak(etag: str) -> str:
    return etag.removeprefix("W/")
