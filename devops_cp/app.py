"""What every front end needs: config, store, catalog, hardware; built once per command.

The executor modules are imported where they are first used: `list` and `--help` must not pay
the start-up time of httpx (executor.http, executor.engine) or of hardware detection.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from executor.config import Config, load_config
from manifests.catalog import Catalog, load_catalog
from manifests.hardware import Hardware
from manifests.plan import Plan, parse_choice_args, resolve

if TYPE_CHECKING:
    from executor.engine import Engine
    from executor.events import Listener
    from executor.config import HttpSettings
    from executor.store import Store


@dataclass
class App:
    config: Config = field(default_factory=load_config)
    settings: HttpSettings | None = None  # None: the defaults, built with the engine

    @cached_property
    def store(self) -> Store:
        from executor.store import Store
        from executor.txn import recover_all

        store = Store(self.config)
        for note in recover_all(store):  # any command that touches the store finishes what a killed run left
            if note.startswith("warning: "):  # a journal it would not act on: say so, on every command, until it is gone
                print(note, file=sys.stderr)
        return store

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.config.env_catalog_dirs())

    @cached_property
    def hardware(self) -> Hardware:
        from executor import hardware as hw

        return hw.detect()

    def engine(self, listener: Listener | None = None, *, python: str | None = None, overwrite: bool = False) -> Engine:
        """`python`: the interpreter that `{python}` steps (a wheel's pip install) use; default this one.
        `overwrite`: replace files a pack does not own (--overwrite)."""
        from executor.engine import Engine
        from executor.events import ignore
        from executor.config import HttpSettings

        return Engine(self.store, listener=listener or ignore, settings=self.settings or HttpSettings(stall_timeout=self.config.stall_timeout), python=python or sys.executable, overwrite=overwrite)

    def plan(self, pack_arg: str, extra_choices: tuple[str, ...] = (), *, mode: str = "install", force: bool = False) -> Plan:
        pack_id, choices = parse_choice_args(pack_arg, extra_choices)
        return resolve(self.catalog.get(pack_id), choices, self.hardware, mode=mode, force=force)

    def records_matching(self, pack_arg: str):
        """Installed variants of a pack; `whisper-model:model_size=base` narrows to one."""
        pack_id, choices = parse_choice_args(pack_arg)
        return [r for r in self.store.records_for_pack(pack_id) if choices.items() <= r.choices.items()]
