"""What the routes share: settings, the store, the spec resolver and the scheduler."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral.config import FOREVER, Settings
from corral.errors import CorralError
from corral.models.store import Store
from corral.scheduler.scheduler import Scheduler
from corral.scheduler.specs import SpecResolver

log = logging.getLogger(__name__)


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

    async def preload(self) -> None:
        """Load CORRAL_PRELOAD's models, one after another, as an empty request would (the server
        answers meanwhile). A model that cannot be loaded is logged and skipped."""
        for name in self.settings.preload:
            try:
                spec = self.resolver.resolve(name)
                pinned = self.scheduler.eviction.pinned(spec.name)
                waiter = self.scheduler.admit(spec, FOREVER if pinned else self.settings.keep_alive)
                seconds = await self.scheduler.warm(waiter)
                log.info("preloaded %s in %.1f s", spec.name, seconds)
            except (CorralError, OSError, ValueError) as exc:
                log.warning("could not preload %s: %s", name, exc)
