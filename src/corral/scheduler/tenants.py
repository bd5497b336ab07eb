"""Who asks and how urgently: a request's tenant, lane and deadline, as the scheduler sees them.

A tenant comes from the API key a request carries (api/keys.py reads the keys file); without
keys every request is the one anonymous tenant, so the queue policy (queueing.py) is plain FIFO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from corral.errors import ClientError


class Lane(StrEnum):
    """A request's priority. Interactive requests are served before batch ones of the same model,
    and batch ones are shed first when the queue fills."""

    INTERACTIVE = "interactive"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """Lower is served first."""
        return 0 if self is Lane.INTERACTIVE else 1

    @classmethod
    def parse(cls, value: str, where: str) -> Lane:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ClientError(f"invalid {where} {value!r}: expected one of interactive, batch") from None


@dataclass(frozen=True, slots=True)
class Tenant:
    """One party sharing the server. Limits of 0 mean none (only the server's own bounds)."""

    name: str
    weight: float = 1.0  # share of slots within a lane, relative to other tenants'
    max_running: int = 0  # requests holding a slot at once, over all models
    max_queued: int = 0  # requests waiting at once; beyond it: 429
    models: frozenset[str] | None = None  # model names (lower case) it may use; None: all
    priority: Lane = Lane.INTERACTIVE  # its requests' lane when they name none
    max_priority: Lane = Lane.INTERACTIVE  # the most urgent lane it may ask for

    def allows(self, model: str) -> bool:
        return self.models is None or model.lower() in self.models

    def lane(self, asked: Lane | None) -> Lane:
        """The lane a request runs in: what it asked for (its default if nothing), never more
        urgent than the tenant's allowance."""
        lane = asked or self.priority
        return lane if lane.rank >= self.max_priority.rank else self.max_priority


ANONYMOUS = Tenant("default")


@dataclass(frozen=True, slots=True)
class Ticket:
    """What the scheduler knows of a request beyond its model: who, which lane, until when."""

    tenant: Tenant = field(default=ANONYMOUS)
    lane: Lane = Lane.INTERACTIVE
    deadline: float | None = None  # monotonic clock; None: no deadline


DEFAULT_TICKET = Ticket()
