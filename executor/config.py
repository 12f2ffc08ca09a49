"""The config file: $DEVOPS_CP_CONFIG, else $XDG_CONFIG_HOME/devops-cp/config.toml.

Keys: catalog_dirs, max_parallel_downloads, max_connections_per_download, lock_timeout, stall_timeout, [data_dirs],
[mirrors], [credentials.NAME] (username, password, hosts), [web] (token, bundle_dirs),
[writes] (plain; durable, UNSAFE when false).
[site] (source: the site mirror packs are installed from; plain_http: it speaks HTTP off loopback).
Relative paths are read from the config file's folder.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import platformdirs

from manifests.errors import ConfigError

APP = "devops-cp"
KNOWN_KEYS = {"catalog_dirs", "max_parallel_downloads", "max_connections_per_download", "data_dirs", "mirrors", "credentials", "web", "lock_timeout", "stall_timeout", "site", "writes"}
PLAIN_WRITES_ENV = "DEVOPS_CP_PLAIN_WRITES"  # =1: the same as [writes] plain = true


def config_dir() -> Path:
    return platformdirs.user_config_path(APP, appauthor=False)


def state_dir() -> Path:
    return platformdirs.user_state_path(APP, appauthor=False)


def config_path() -> Path:
    return Path(os.environ.get("DEVOPS_CP_CONFIG") or config_dir() / "config.toml")


@dataclass(frozen=True)
class WriteSettings:
    """How an engine writes packs. The defaults are the ones for real use."""

    # Sync each pack to disk before it becomes visible. False is UNSAFE, for benchmarks only:
    # after a power loss a pack may be visible with empty or missing files.
    durable: bool = True
    # The reference path only: every file written by Copy in the calling thread, one fsync per
    # file; no helper thread or process, no libc calls (syncfs, fallocate, sync_file_range).
    plain: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    catalog_dirs: tuple[Path, ...] = ()
    max_parallel_downloads: int = 2
    max_connections_per_download: int = 8  # one large file over up to this many connections; 1: one stream
    data_dirs: dict[str, Path] = field(default_factory=dict)
    mirrors: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    web: dict = field(default_factory=dict)
    lock_timeout: float = 60.0
    stall_timeout: float = 60.0  # seconds without a byte before a download retries and resumes
    site_source: str | None = None
    site_plain_http: bool = False
    writes: WriteSettings = WriteSettings()

    def env_catalog_dirs(self) -> list[Path]:
        """DEVOPS_CP_CATALOG (os.pathsep-separated) first, then catalog_dirs.

        A folder named there that does not exist is an error: a typo must not quietly leave the
        catalog without the recipes it was meant to add.
        """
        from_env = [Path(p).expanduser() for p in os.environ.get("DEVOPS_CP_CATALOG", "").split(os.pathsep) if p]
        for folder in from_env:
            if not folder.is_dir():
                raise ConfigError(f"DEVOPS_CP_CATALOG names {folder}, which is not a folder", hint="fix the variable, or unset it")
        return from_env + list(self.catalog_dirs)

    def resolve(self, path: str) -> Path:
        """A path written in the config file: `~` expanded, a relative one read from the file's folder."""
        return self.path.parent / Path(path).expanduser()


def _fail(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: '{key}' {problem}", hint="fix the config file or set DEVOPS_CP_CONFIG to another one")


def _str_table(path: Path, data: dict, key: str) -> dict[str, str]:
    table = data.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise _fail(path, key, "must be a table of strings")
    return table


def _writes(path: Path, data: dict) -> WriteSettings:
    table = data.get("writes", {})
    if not isinstance(table, dict) or set(table) - {"durable", "plain"} or not all(isinstance(v, bool) for v in table.values()):
        raise _fail(path, "writes", "must be a table with true/false values for 'durable' and 'plain'")
    plain = table.get("plain", False) or os.environ.get(PLAIN_WRITES_ENV) == "1"
    return WriteSettings(durable=table.get("durable", True), plain=plain)


def load_config(path: Path | None = None) -> Config:
    named = os.environ.get("DEVOPS_CP_CONFIG") if path is None else None
    path = (path or config_path()).absolute()
    if named and not path.is_file():
        raise ConfigError(f"DEVOPS_CP_CONFIG names {named}, which is not a file", hint="fix the variable, or unset it to use the default config file")
    if not path.exists():
        return Config(path=path, writes=_writes(path, {}))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"is not a known key (known: {', '.join(sorted(KNOWN_KEYS))})")
    parallel = data.get("max_parallel_downloads", 2)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise _fail(path, "max_parallel_downloads", "must be a whole number of at least 1")
    connections = data.get("max_connections_per_download", 8)
    if not isinstance(connections, int) or isinstance(connections, bool) or not 1 <= connections <= 64:
        raise _fail(path, "max_connections_per_download", "must be a whole number from 1 (one stream per file) to 64")
    catalog_dirs = data.get("catalog_dirs", [])
    if not isinstance(catalog_dirs, list) or not all(isinstance(d, str) for d in catalog_dirs):
        raise _fail(path, "catalog_dirs", "must be a list of directory paths")
    credentials = data.get("credentials", {})
    if not isinstance(credentials, dict) or not all(isinstance(v, dict) for v in credentials.values()):
        raise _fail(path, "credentials", "must hold tables such as [credentials.maxmind]")
    for name, entry in credentials.items():
        hosts = entry.get("hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h and "/" not in h for h in hosts):
            raise _fail(path, f"credentials.{name}.hosts", "must be a list of host names, e.g. [\"download.maxmind.com\"]")
        if not all(isinstance(entry.get(k, ""), str) for k in ("username", "password")):
            raise _fail(path, f"credentials.{name}", "username and password must be strings")
    web = data.get("web", {})
    if not isinstance(web, dict):
        raise _fail(path, "web", "must be a table")
    lock_timeout = data.get("lock_timeout", 60.0)
    if not isinstance(lock_timeout, (int, float)) or lock_timeout < 0:
        raise _fail(path, "lock_timeout", "must be a number of seconds")
    stall_timeout = data.get("stall_timeout", 60.0)
    if not isinstance(stall_timeout, (int, float)) or isinstance(stall_timeout, bool) or stall_timeout <= 0:
        raise _fail(path, "stall_timeout", "must be a number of seconds above 0")
    site = data.get("site", {})
    if not isinstance(site, dict) or set(site) - {"source", "plain_http"}:
        raise _fail(path, "site", "must be a table with `source` (oci://HOST[:PORT]/REPO or an http(s) URL) and optionally `plain_http`")
    if not isinstance(site.get("source", ""), str) or not isinstance(site.get("plain_http", False), bool):
        raise _fail(path, "site", "needs `source` as a string and `plain_http` as true or false")
    here = Config(path=path)  # relative paths are the config file's folder's, never the current one's
    return Config(
        path=path,
        catalog_dirs=tuple(here.resolve(d) for d in catalog_dirs),
        max_parallel_downloads=parallel,
        max_connections_per_download=connections,
        data_dirs={k: here.resolve(v) for k, v in _str_table(path, data, "data_dirs").items()},
        mirrors=_str_table(path, data, "mirrors"),
        credentials=credentials,
        web=web,
        lock_timeout=float(lock_timeout),
        stall_timeout=float(stall_timeout),
        site_source=site.get("source") or None,
        site_plain_http=site.get("plain_http", False),
        writes=_writes(path, data),
    )


def rewrite_url(url: str, mirrors: dict[str, str]) -> str:
    """The longest matching prefix wins, so a site can map one host or one path."""
    for prefix in sorted(mirrors, key=len, reverse=True):
        if url.startswith(prefix):
            return mirrors[prefix] + url[len(prefix):]
    return url


@dataclass(frozen=True)
class HttpSettings:
    """How downloads behave; here, not in executor/http.py, so that reading them does not import httpx."""

    connect_timeout: float = 30.0
    stall_timeout: float = 60.0  # no byte for this long: retry and resume (a slow body that moves is fine)
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    deadline: float | None = None  # overall seconds for one file; the partial file stays resumable
    jitter: float = 0.0  # each wait grows by a random 0..jitter of itself: many hosts on one registry do not retry in step
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
