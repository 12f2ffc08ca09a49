"""The control-panel routes: the page, the pack list, the audit documents, jobs and their SSE streams.

Rendering only, like cli.py: the work is the Engine's (or sideload's), run as a
job in a thread (devops_cp/jobs.py); this module turns requests into plans and
job events into `text/event-stream`.

Security model (a local control panel):
* bound to 127.0.0.1 by default, and then only loopback Host headers are
  served (a DNS-rebinding page cannot read the API under another name);
* every request other than GET/HEAD/OPTIONS needs the token and, when it carries an
  Origin header, an Origin equal to the Host it was sent to;
* a sideload names a bundle that must resolve (symlinks followed) inside a
  configured bundle directory;
* errors are JSON `{error, hint}`; an unexpected exception is logged here and
  answered with a generic 500, never a stack trace.
"""

from __future__ import annotations

import asyncio
import glob
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devops_cp import reports
from devops_cp.app import App
from devops_cp.jobs import Busy, Job, Jobs, error_data
from executor.config import Config
from manifests.errors import (
    ConfigError,
    DataPackError,
    FetchError,
    LockTimeout,
    PolicyError,
    TrustError,
    UnknownPackError,
    UsageError,
)
from manifests.hardware import Hardware
from manifests.names import IDENTIFIER_RULE, is_identifier, is_pack_key
from manifests.plan import Plan, resolve
from manifests.recipe import Recipe
from manifests.units import estimated_times, fmt_size

log = logging.getLogger("devops_cp.web")

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY = 64 * 1024  # every POST body is a small JSON object
KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies and browsers from timing out
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # the page URL may carry ?token=
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSettings:
    token: str
    bundle_dirs: tuple[Path, ...] = ()
    allowed_hosts: frozenset[str] | None = None  # None: any Host (a non-loopback bind)
    config_path: Path | None = None  # for hints


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def web_settings(config: Config, *, host: str = "127.0.0.1", token: str | None = None) -> tuple[WebSettings, bool]:
    """The config's [web] table -> settings, and whether the token was generated here."""
    web = config.web
    configured = web.get("token")
    if configured is not None and (not isinstance(configured, str) or len(configured) < 8):
        raise ConfigError(f"{config.path}: '[web] token' must be a string of at least 8 characters")
    dirs = web.get("bundle_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{config.path}: '[web] bundle_dirs' must be a list of directory paths")
    unknown = sorted(set(web) - {"token", "bundle_dirs"})
    if unknown:
        raise ConfigError(f"{config.path}: '[web] {unknown[0]}' is not a known key (known: bundle_dirs, token)")
    chosen = token or configured
    generated = chosen is None
    settings = WebSettings(
        token=chosen or secrets.token_urlsafe(24),
        bundle_dirs=tuple(config.resolve(d) for d in dirs),
        allowed_hosts=(LOOPBACK_NAMES | {host.strip("[]")}) if is_loopback(host) else None,
        config_path=config.path,
    )
    return settings, generated


# --- JSON errors ------------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal with a status, a message and a hint; extra fields go into the JSON body."""

    def __init__(self, status: int, error: str, hint: str | None = None, **extra):
        super().__init__(error)
        self.status, self.error, self.hint, self.extra = status, error, hint, extra


def problem(status: int, error: str, hint: str | None = None, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint, **extra}, status_code=status, headers=headers)


def status_for(exc: DataPackError) -> int:
    if isinstance(exc, UnknownPackError):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, (PolicyError, LockTimeout)):
        return 409
    if isinstance(exc, TrustError):
        return 422
    if isinstance(exc, FetchError):
        return 502
    return 500


async def on_api_error(request: Request, exc: ApiError) -> Response:
    return problem(exc.status, exc.error, exc.hint, **exc.extra)


async def on_data_pack_error(request: Request, exc: DataPackError) -> Response:
    return problem(status_for(exc), exc.message, exc.hint, type=type(exc).__name__)


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    hint = "the page at / lists what this server offers" if exc.status_code == 404 else None
    return problem(exc.status_code, str(exc.detail), hint, headers=getattr(exc, "headers", None))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error", "the server log has the details; please report it")


# --- the guard: Host, Origin, token, security headers ------------------------------------------


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """Pure ASGI middleware, so that it also covers the SSE stream and static files."""

    def __init__(self, app: ASGIApp, settings: WebSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        refusal = self.check(scope, Headers(scope=scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, scope: Scope, headers: Headers) -> Response | None:
        host = headers.get("host", "")
        allowed = self.settings.allowed_hosts
        if allowed is not None and _hostname(host).lower() not in allowed:
            return problem(400, f"unexpected Host header {host!r}", "open the page through 127.0.0.1 or localhost, as printed at start")
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
                return problem(403, f"request from another origin ({origin}) refused", "start work from the devops-cp page that this server serves")
        given = _token_from(headers)
        if given is None:
            return problem(
                401,
                "a token is required to start work",
                "send 'Authorization: Bearer TOKEN' or 'X-DevOps-CP-Token: TOKEN'; the token is printed when "
                "`devops-cp serve` starts, or set as [web] token in the config file",
                headers={"www-authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), self.settings.token.encode()):
            return problem(403, "wrong token", "use the token printed when `devops-cp serve` started (or [web] token in the config file)")
        return None


def _token_from(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = headers.get("x-devops-cp-token", "").strip()
    return token or None


# --- request helpers -----------------------------------------------------------------------------


async def read_json(request: Request) -> dict:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "request body too large", f"send a JSON object of at most {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, "request body too large", f"send a JSON object of at most {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the request body is not valid JSON", "send a JSON object, e.g. {\"pack\": \"trivy-db\"}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false")
    return value


def _string_map(body: dict, name: str) -> dict[str, str]:
    value = body.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, f"'{name}' must be an object of strings", "e.g. {\"model_size\": \"base\"}")
    return value


# --- documents ---------------------------------------------------------------------------------


def _size_fields(recipe: Recipe, choices: dict[str, str], hardware: Hardware) -> dict:
    try:
        plan = resolve(recipe, choices, hardware, mode="install", force=True)  # size only: never refuses
    except DataPackError as exc:
        return {"size_bytes": None, "problem": exc.message}
    size = plan.size_estimate_bytes
    return {
        "size_bytes": size,
        "size_human": fmt_size(size) if size else None,
        "estimated_times": estimated_times(size) if size else {},
        "large": size > recipe.size_warning_mb * 10**6,
    }


def packs_document(app: App, jobs: Jobs) -> dict:
    """The catalog as the page needs it: choices gated by hardware (as `info` does), sizes, times."""
    hardware = app.hardware
    installed: dict[str, list[str]] = {}
    for record in app.store.records():
        installed.setdefault(record.pack_id, []).append(record.key)
    packs = []
    for recipe in sorted(app.catalog.recipes.values(), key=lambda r: r.id):
        choices = []
        for index, choice in enumerate(recipe.choices):
            options = []
            for option in choice.options:
                entry = {
                    "value": option.value,
                    "label": option.label,
                    "description": option.description,
                    "default": option is choice.default,
                    "min_vram_mb": option.min_vram_mb,
                    **reports.option_availability(option, hardware),
                }
                if index == 0:  # the first choice selects the steps, so it decides the size
                    entry.update(_size_fields(recipe, {choice.id: option.value}, hardware))
                options.append(entry)
            choices.append({"id": choice.id, "label": choice.label, "options": options})
        running = jobs.running_for(recipe.id)
        packs.append(
            {
                **reports.recipe_summary(app, recipe),
                "choices": choices,
                "installed": sorted(installed.get(recipe.id, [])),
                "running_job": running.id if running else None,
                **_size_fields(recipe, {}, hardware),
            }
        )
    return {
        "packs": packs,
        "gpu": [g.name for g in hardware.gpus],
        "errors": [str(e) for e in app.catalog.errors],
    }


def outcomes_result(outcomes, warnings: tuple[str, ...] | list[str] = ()) -> tuple[bool, dict]:
    """The Engine's outcomes -> the final SSE event: (ok, {message, hint, results, warnings})."""
    results, warnings = [], list(warnings)
    for outcome in outcomes:
        if outcome.error is not None:
            results.append({"pack": outcome.key, "ok": False, **error_data(outcome.error)})
            continue
        warnings += outcome.notes
        record = outcome.record
        if record is None:  # nothing installed on purpose (a dry run)
            results.append({"pack": outcome.key, "ok": True, "warnings": list(outcome.notes)})
            continue
        results.append(
            {
                "pack": record.key,
                "ok": True,
                "files": len(record.files),
                "size_bytes": record.size,
                "size_human": fmt_size(record.size),
                "data_dir": record.data_dir,
                "checksum_verified": record.checksum_verified,
                "already_installed": getattr(outcome, "already_installed", False),  # intact: no byte moved
                "upstream": getattr(outcome, "upstream", None),
                "warnings": list(outcome.notes),
            }
        )
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        first = failed[0]
        prefix = f"{len(failed)} of {len(outcomes)} packs failed; " if len(outcomes) > 1 else ""
        return False, {**error_data(first.error), "message": f"{prefix}{first.key}: {first.error.message}", "results": results}
    if not results:
        return True, {"message": "nothing to do", "results": [], "warnings": warnings}
    message = "; ".join(_result_line(r) for r in results)
    return True, {"message": message, "results": results, "warnings": warnings}


def _result_line(r: dict) -> str:
    """As the command line says it (devops_cp/cli_common.py)."""
    if "files" not in r:
        return f"{r['pack']}: nothing installed"
    if r["already_installed"]:
        asked = " (upstream unchanged)" if r["upstream"] == "unchanged" else ""
        return f"already installed {r['pack']}{asked}: {r['files']} file(s), {r['size_human']} in {r['data_dir']}"
    return f"installed {r['pack']}: {r['files']} file(s), {r['size_human']} in {r['data_dir']}"


def sse_frame(seq: int, kind: str, data: dict) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


# --- the application -----------------------------------------------------------------------------


@dataclass
class ControlPanel:
    settings: WebSettings
    app_factory: Callable[[], App] = App
    jobs: Jobs = field(default_factory=Jobs)
    _hardware: Hardware | None = None
    _hw_lock: threading.Lock = field(default_factory=threading.Lock)

    def fresh_app(self) -> App:
        """Config, catalog and store are re-read per request; hardware is detected once (nvidia-smi is slow)."""
        app = self.app_factory()
        with self._hw_lock:
            if self._hardware is None:
                self._hardware = app.hardware
        vars(app)["hardware"] = self._hardware  # App.hardware is a cached_property: this is its cache
        return app

    # --- read-only (plain functions: Starlette runs them in its thread pool) ----------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    def packs(self, request: Request) -> Response:
        document = packs_document(self.fresh_app(), self.jobs)
        return JSONResponse({**document, "bundle_dirs": [str(d) for d in self.settings.bundle_dirs]})

    def job(self, request: Request) -> Response:
        return JSONResponse(self._job(request).summary())

    async def events(self, request: Request) -> Response:
        job = self._job(request)
        try:
            cursor = int(request.headers.get("last-event-id", "0"))
        except ValueError:
            cursor = 0
        return StreamingResponse(
            self._stream(job, cursor),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _stream(self, job: Job, cursor: int):
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:  # called from executor threads
            loop.call_soon_threadsafe(ready.set)

        job.subscribe(wake)
        try:
            yield "retry: 2000\n\n"
            while True:
                ready.clear()  # before reading: a publish after this read wakes us
                entries, done = job.since(cursor)
                for entry in entries:
                    yield sse_frame(entry.seq, entry.type, entry.data)
                    cursor = entry.seq
                if done:
                    return
                try:
                    await asyncio.wait_for(ready.wait(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            job.unsubscribe(wake)

    def _job(self, request: Request) -> Job:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            raise ApiError(404, "no such job", "jobs are kept while the server runs; start the install again")
        return job

    # --- audit (the same documents as `status --json` and `check-updates --json`) -----------------

    def data_status(self, request: Request) -> Response:
        return JSONResponse(reports.status_document(self.fresh_app()))

    def data_check_updates(self, request: Request) -> Response:
        return JSONResponse(reports.check_updates_document(self.fresh_app()))

    # --- starting work ---------------------------------------------------------------------------

    def _busy(self, pack: str, job: Job) -> ApiError:
        return ApiError(
            409,
            f"{pack} already has a running job ({job.title})",
            "wait for it to finish; the page shows its progress",
            job_id=job.id,
            events_url=f"/api/jobs/{job.id}/events",
        )

    def _start(self, kind: str, title: str, keys: list[str], work) -> Response:
        try:
            job = self.jobs.start(kind, title, keys, work)
        except Busy as exc:
            raise self._busy(exc.key, exc.job) from None
        return JSONResponse({"job_id": job.id, "events_url": f"/api/jobs/{job.id}/events", "job": job.summary()}, status_code=202)

    async def install(self, request: Request) -> Response:
        body = await read_json(request)
        return await run_in_threadpool(self._install, body)

    def _install(self, body: dict) -> Response:
        pack = body.get("pack")
        if not isinstance(pack, str) or not pack:
            raise ApiError(400, "'pack' is required", "e.g. {\"pack\": \"whisper-model\", \"choices\": {\"model_size\": \"base\"}}")
        if not is_identifier(pack):
            raise ApiError(400, f"'pack' must be a pack id ({IDENTIFIER_RULE})", "the page's pack list has them")
        choices = _string_map(body, "choices")
        confirm, force = _flag(body, "confirm"), _flag(body, "force")
        app = self.fresh_app()
        recipe = app.catalog.get(pack)
        running = self.jobs.running_for(recipe.id)
        if running is not None:
            raise self._busy(recipe.id, running)
        plan = resolve(recipe, choices, app.hardware, mode="install", force=force)
        size = plan.size_estimate_bytes
        if size > recipe.size_warning_mb * 10**6 and not confirm:
            times = estimated_times(size)
            raise ApiError(
                409,
                f"{plan.key} is a large download ({fmt_size(size)}; " + ", ".join(f"{k}: {v}" for k, v in times.items()) + ")",
                "confirm it first: send \"confirm\": true (the page asks you)",
                confirm_required=True,
                size_bytes=size,
                size_human=fmt_size(size),
                estimated_times=times,
            )
        return self._start("install", plan.key, [recipe.id], lambda job: self._run_install(app, plan, job))

    @staticmethod
    def _run_install(app: App, plan: Plan, job: Job) -> tuple[bool, dict]:
        for warning in plan.warnings:
            job.publish({"type": "notice", "pack": plan.key, "level": "warning", "message": warning})
        engine = app.engine(job.listener)
        try:
            # The page asked before the POST (confirm: true), so the engine's question is answered.
            outcomes = engine.install([plan], confirm=lambda *_: True)
        finally:
            engine.close()
        return outcomes_result(outcomes, plan.warnings)

    def bundle_path(self, raw) -> Path:
        """The bundle a request names, resolved with symlinks followed, only inside a bundle dir."""
        if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
            raise ApiError(400, "'bundle' must be the path of a bundle on this host")
        where = self.settings.config_path or "the config file"
        if not self.settings.bundle_dirs:
            raise ApiError(403, "no bundle directories are configured", f"add bundle_dirs = [\"/mnt/usb\"] to the [web] table of {where}")
        roots = [Path(os.path.realpath(d)) for d in self.settings.bundle_dirs]

        def inside(path: Path) -> bool:
            return any(path == root or root in path.parents for root in roots)

        given = Path(raw).expanduser()
        candidates = [given] if given.is_absolute() else [root / given for root in roots]
        allowed = [Path(os.path.realpath(c)) for c in candidates if inside(Path(os.path.realpath(c)))]
        if not allowed:
            raise ApiError(
                403,
                f"{raw} is outside the bundle directories",
                f"bundles are read only from {', '.join(map(str, self.settings.bundle_dirs))}; "
                f"copy it there or add its directory to [web] bundle_dirs in {where}",
            )
        for path in allowed:
            files = _bundle_files(path)
            if not files:
                continue
            for file in files:  # every file the reader may open: the archive or each part, the parts index and its signature
                if not inside(Path(os.path.realpath(file))):
                    raise ApiError(403, f"{file.name} points outside the bundle directories", "copy the bundle's files themselves, not links to them")
            return path
        raise ApiError(404, f"no bundle at {raw}", f"bundles are read from {', '.join(map(str, self.settings.bundle_dirs))}")

    async def sideload(self, request: Request) -> Response:
        body = await read_json(request)
        return await run_in_threadpool(self._sideload, body)

    def _sideload(self, body: dict) -> Response:
        path = self.bundle_path(body.get("bundle"))
        packs = body.get("packs") or []
        if not isinstance(packs, list) or not all(is_pack_key(p) for p in packs):
            raise ApiError(400, "'packs' must be a list of pack ids or keys", f"a pack id is {IDENTIFIER_RULE}")
        flags = {name: _flag(body, name) for name in ("allow_unsigned", "allow_expired", "allow_downgrade", "force")}
        from sideload import api  # the bundle reader loads only when a sideload is asked for

        # One job per pack: the bundle's manifest names its packs (read only the header, no payload).
        contents = api.inspect_bundle(path)
        keys = sorted({p["id"] for p in contents["packs"] if not packs or p["id"] in packs or p["key"] in packs}) or [f"bundle:{path}"]
        app = self.fresh_app()

        def work(job: Job) -> tuple[bool, dict]:
            sideload_request = api.SideloadRequest(
                path=path,
                trust=api.TrustOptions(allow_unsigned=flags["allow_unsigned"], allow_expired=flags["allow_expired"]),
                packs=tuple(packs),
                allow_downgrade=flags["allow_downgrade"],
                force=flags["force"],
                hardware=app.hardware,
            )
            engine = app.engine(job.listener)
            try:
                outcomes = api.sideload_bundle(engine, sideload_request)
            finally:
                engine.close()
            for warning in sideload_request.warnings:
                job.publish({"type": "notice", "pack": "", "level": "warning", "message": warning})
            return outcomes_result(outcomes, sideload_request.warnings)

        return self._start("sideload", f"sideload {path.name}", keys, work)

    # --- wiring -----------------------------------------------------------------------------------

    def routes(self) -> list:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/api/packs", self.packs, methods=["GET"]),
            Route("/api/jobs/install", self.install, methods=["POST"]),
            Route("/api/jobs/sideload", self.sideload, methods=["POST"]),
            Route("/api/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/api/jobs/{job_id}/events", self.events, methods=["GET"]),
            Route("/audit/data-status", self.data_status, methods=["POST"]),
            Route("/audit/data-check-updates", self.data_check_updates, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ]


def create_app(settings: WebSettings, *, app_factory: Callable[[], App] = App) -> Starlette:
    panel = ControlPanel(settings, app_factory)
    web = Starlette(
        routes=panel.routes(),
        exception_handlers={
            ApiError: on_api_error,
            DataPackError: on_data_pack_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    web.state.panel = panel
    web.add_middleware(Guard, settings=settings)
    return web


# --- serving -----------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """Bind first, so the printed URL has the real port (port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


def _bundle_files(path: Path) -> list[Path]:
    """The files reading the bundle at `path` may open, whichever of its names was given (X.tar.zst,
    X.tar.zst.001, ...): X itself and everything named X.* beside it; [] when there is none."""
    from sideload.reader import bundle_name  # the reader's own rule for which name the parts share

    name = path.with_name(bundle_name(path))
    siblings = [Path(p) for p in glob.glob(glob.escape(str(name)) + ".*")]
    return ([name] if os.path.lexists(name) else []) + siblings


class _NoTokenInLogs(logging.Filter):
    """uvicorn's access log prints each request's path with its query, and the page's first URL
    carries ?token=: the value never reaches a log."""

    _TOKEN = re.compile(r"(?i)(token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self._TOKEN.sub(r"\1[redacted]", record.msg)
        return True


def uvicorn_server(web: Starlette, *, log_level: str = "info", access_log: bool = True, on_started: Callable[[], None] | None = None):
    """`on_started`: called once the sockets accept connections (`serve` prints its URL then)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

    config = uvicorn.Config(
        web,
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        proxy_headers=False,  # nothing sits in front of a local control panel
        server_header=False,
        timeout_graceful_shutdown=2,  # open SSE streams must not hold Ctrl-C hostage
    )
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):  # configured by uvicorn.Config just now
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTokenInLogs) for f in logger.filters):
            logger.addFilter(_NoTokenInLogs())
    return Server(config)


__all__ = ["ApiError", "ControlPanel", "Guard", "WebSettings", "create_app", "packs_document", "web_settings"]
