"""What the routes share: settings, the store, the spec resolver and the scheduler."""

from __future__ import annotations

from dataclasses import dataclass

from corral.config import Settings
from corral.models.store import Store
from corral.scheduler.scheduler import Scheduler
from corral.scheduler.specs import SpecResolver


@dataclass
class AppContext:
    settings: Settings
    store: Store
    resolver: SpecResolver
    scheduler: Scheduler

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        store = Store(settings.models_dir)
        return cls(settings, store, SpecResolver(settings, store), Scheduler(settings))
