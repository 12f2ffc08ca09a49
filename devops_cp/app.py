"""What every front end needs: config, store, catalog, hardware; built once per command."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property

from executor import hardware as hw
from executor.config import Config, load_config
from executor.engine import Engine
from executor.events import Listener, ignore
from executor.http import HttpSettings
from executor.store import Store
from executor.txn import recover_all
from manifests.catalog import Catalog, load_catalog
from manifests.hardware import Hardware
from manifests.plan import Plan, parse_choice_args, resolve


@dataclass
class App:
    config: Config = field(default_factory=load_config)
    settings: HttpSettings = HttpSettings()

    @cached_property
    def store(self) -> Store:
        store = Store(self.config)
        recover_all(store)  # any command that touches the store finishes what a killed run left
        return store

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.config.env_catalog_dirs())

    @cached_property
    def hardware(self) -> Hardware:
        return hw.detect()

    def engine(self, listener: Listener = ignore, *, python: str | None = None) -> Engine:
        """`python`: the interpreter that `{python}` steps (a wheel's pip install) use; default this one."""
        return Engine(self.store, listener=listener, settings=self.settings, python=python or sys.executable)

    def plan(self, pack_arg: str, extra_choices: tuple[str, ...] = (), *, mode: str = "install", force: bool = False) -> Plan:
        pack_id, choices = parse_choice_args(pack_arg, extra_choices)
        return resolve(self.catalog.get(pack_id), choices, self.hardware, mode=mode, force=force)

    def records_matching(self, pack_arg: str):
        """Installed variants of a pack; `whisper-model:model_size=base` narrows to one."""
        pack_id, choices = parse_choice_args(pack_arg)
        return [r for r in self.store.records_for_pack(pack_id) if choices.items() <= r.choices.items()]
