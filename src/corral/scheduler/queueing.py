"""The queue policy: which waiting request of a model takes the next free slot.

Pure logic (no asyncio, no clock of its own), so it is tested alone. The scheduler keeps its
waiting requests in arrival order and asks this policy for the order of service:

1. Lanes: interactive requests before batch ones (strict priority within a model).
2. Fair shares: within a lane, tenants share a model's slots by weight, start-time fair
   queueing over generated tokens. Each (model, tenant) has a virtual time; a request that
   starts advances it by its expected cost (the tenant's recent tokens per request) divided by
   the tenant's weight, corrected by the real count when it ends. A waiting request's key is its
   tenant's virtual time plus the cost of the tenant's requests queued ahead of it, so a tenant
   with 200 queued requests has its 200th far in the virtual future while another tenant's one
   request sits at the present. A tenant that was idle joins at the model's virtual clock (the
   key of the last request started), so idleness earns no credit to burst with later.
3. FIFO within a tenant and lane; a tenant at its `max_running` is skipped, not waited for.

With one tenant and one lane every key grows with arrival order: plain FIFO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from corral.errors import CorralError
from corral.scheduler.state import Busy, TenantBusy
from corral.scheduler.tenants import Lane, Ticket

# Tokens a request is expected to generate before its tenant has a history for the model.
FIRST_COST = 64.0
# Weight of the newest request in a tenant's running mean of tokens per request.
COST_SMOOTHING = 0.25


class Entry(Hashable, Protocol):
    """A waiting request as the policy sees it (the scheduler's Waiter)."""

    @property
    def model(self) -> str: ...

    @property
    def ticket(self) -> Ticket: ...

    @property
    def enqueued(self) -> float: ...


E = TypeVar("E", bound=Entry)


@dataclass(slots=True)
class _Account:
    """One tenant's standing on one model."""

    vtime: float = 0.0
    cost: float = FIRST_COST  # running mean of tokens per request
    active: int = 0  # its requests on this model that hold a slot


class FairQueue:
    def __init__(self) -> None:
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._clock: dict[str, float] = {}  # model → virtual time of the last request started
        self._running: Counter[str] = Counter()  # tenant → requests holding a slot, all models
        self._charged: dict[Entry, float] = {}  # started entry → virtual time charged for it

    def _account(self, entry: Entry) -> _Account:
        key = (entry.model, entry.ticket.tenant.name)
        if key not in self._accounts:
            self._accounts[key] = _Account(vtime=self._clock.get(entry.model, 0.0))
        return self._accounts[key]

    def running(self, tenant: str) -> int:
        return self._running[tenant]

    @property
    def running_by_tenant(self) -> dict[str, int]:
        return dict(self._running)

    def arrive(self, entry: Entry, waiting: Iterable[Entry]) -> None:
        """A request joins the queue (`waiting`: the others). A tenant with nothing waiting or
        running on this model starts from the model's virtual clock, never from behind it."""
        account = self._account(entry)
        t = entry.ticket.tenant.name
        if account.active == 0 and not any(w.model == entry.model and w.ticket.tenant.name == t
                                           for w in waiting if w is not entry):
            account.vtime = max(account.vtime, self._clock.get(entry.model, 0.0))

    def refusal(self, ticket: Ticket, waiting: Iterable[Entry], queued: int, max_queue: int) -> CorralError | None:
        """Why a request that would wait may not (None: it may). `queued`: requests waiting
        server-wide. A tenant over its own limit gets 429; the server's bound is a 503, and batch
        requests meet it a quarter of the queue early, so interactive ones still get in."""
        tenant = ticket.tenant
        if tenant.max_queued and sum(w.ticket.tenant.name == tenant.name for w in waiting) >= tenant.max_queued:
            return TenantBusy(f"too many requests waiting for this API key (at most {tenant.max_queued}), "
                              "please try again")
        bound = max_queue - (max(max_queue // 4, 1) if ticket.lane == Lane.BATCH else 0)
        if queued >= bound:
            return Busy("server busy, please try again.  maximum pending requests exceeded")
        return None

    def keys(self, entries: Sequence[Entry]) -> dict[Entry, tuple[int, float, float]]:
        """Each entry's service key (lower first): (lane, virtual start, arrival)."""
        ahead: Counter[tuple[str, str]] = Counter()
        keys = {}
        for entry in sorted(entries, key=lambda e: (e.ticket.lane.rank, e.enqueued)):
            tenant = entry.ticket.tenant
            account = self._account(entry)
            n = ahead[(entry.model, tenant.name)]
            ahead[(entry.model, tenant.name)] += 1
            keys[entry] = (entry.ticket.lane.rank, account.vtime + n * account.cost / tenant.weight,
                           entry.enqueued)
        return keys

    def order(self, entries: Sequence[E]) -> list[E]:
        """All entries in the order they would be served if slots freed one at a time."""
        keys = self.keys(entries)
        return sorted(entries, key=keys.__getitem__)

    def next(self, entries: Sequence[E]) -> E | None:
        """The entry (of one model's queue) to serve next; tenants at their max_running skip."""
        keys = self.keys(entries)
        eligible = [e for e in entries if not self.at_limit(e)]
        return min(eligible, key=keys.__getitem__, default=None)

    def at_limit(self, entry: Entry) -> bool:
        limit = entry.ticket.tenant.max_running
        return bool(limit) and self._running[entry.ticket.tenant.name] >= limit

    def started(self, entry: Entry) -> None:
        """The entry took a slot: charge its tenant the expected cost."""
        account = self._account(entry)
        self._clock[entry.model] = max(self._clock.get(entry.model, 0.0), account.vtime)
        charge = account.cost / entry.ticket.tenant.weight
        account.vtime += charge
        account.active += 1
        self._running[entry.ticket.tenant.name] += 1
        self._charged[entry] = charge

    def finished(self, entry: Entry, tokens: int) -> None:
        """A started entry ended having generated `tokens`: settle the charge at the real cost."""
        charge = self._charged.pop(entry, None)
        if charge is None:
            return
        account = self._account(entry)
        weight = entry.ticket.tenant.weight
        cost = max(tokens, 1)
        account.vtime += cost / weight - charge
        account.cost += COST_SMOOTHING * (cost - account.cost)
        account.active -= 1
        name = entry.ticket.tenant.name
        self._running[name] -= 1
        if self._running[name] <= 0:
            del self._running[name]
