"""Money budgets per key, per `user`, per team and global: checked before dispatch against the
request's worst-case cost (reserved at once, so concurrent requests cannot overshoot together),
charged after with the real cost."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Budget:
    """`scope` is "global", "team:<name>", "user:<name>" or "key:<id>"."""

    scope: str
    label: str
    amount: float
    period: str


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and reset time (UTC epoch seconds) of the budget period containing `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    return start.timestamp(), end.timestamp()


@dataclass(slots=True)
class _Account:
    period_start: float
    resets_at: float
    spent: float
    reserved: float = 0.0
    # What the shared budget last said other requests had reserved (in flight on any replica).
    shared_reserved: float = 0.0
    # While the shared budgets are away: (outage number, spend when it began, this replica's
    # share of what was left then).
    outage: tuple[int, float, float] | None = None


class BudgetLedger:
    """Spend and reservations per budget and period. Spend before this process started comes
    from `spent_since(scope, start)` (the request records), once per period."""

    def __init__(self, spent_since: Callable[[str, float], float], clock: Callable[[], float]) -> None:
        self.spent_since = spent_since
        self.clock = clock
        self._accounts: dict[str, _Account] = {}

    def _account(self, budget: Budget) -> _Account:
        now = self.clock()
        account = self._accounts.get(budget.scope)
        if account is None or now >= account.resets_at:
            start, resets = period_bounds(budget.period, now)
            spent = self.spent_since(budget.scope, start) if account is None else 0.0
            reserved = account.reserved if account is not None else 0.0
            account = self._accounts[budget.scope] = _Account(start, resets, spent, reserved)
        return account

    def remaining(self, budget: Budget) -> float:
        account = self._account(budget)
        return budget.amount - account.spent - account.reserved

    def spent(self, budget: Budget) -> float:
        return self._account(budget).spent

    def resets_at(self, budget: Budget) -> float:
        return self._account(budget).resets_at

    def exhausted_by(self, budgets: list[Budget], estimate: float) -> Budget | None:
        """The first budget that `estimate` more would overrun, counting what is reserved."""
        for budget in budgets:
            if estimate > self.remaining(budget) + 1e-12:
                return budget
        return None

    def exhausted_by_share(
        self, budgets: list[Budget], estimate: float, outage: int | None, replicas: int
    ) -> Budget | None:
        """Like `exhausted_by`, while the shared budgets are away: this replica may spend only
        its share (1/replicas) of what was left of each budget when outage number `outage`
        began, so the replicas together cannot overrun it. `outage` None: a share of what is
        left now (one failed round trip, not an outage)."""
        for budget in budgets:
            account = self._account(budget)
            if outage is None:
                left = max(0.0, budget.amount - account.spent - account.shared_reserved)
                base, share = account.spent, left / max(1, replicas)
            else:
                if account.outage is None or account.outage[0] != outage:
                    # What other requests had reserved may all still be spent.
                    reserved = account.reserved + account.shared_reserved
                    left = max(0.0, budget.amount - account.spent - reserved)
                    account.outage = (outage, account.spent, left / max(1, replicas))
                _, base, share = account.outage
            used = account.spent - base + account.reserved
            if estimate > share - used + 1e-12:
                return budget
        return None

    def past_soft_limit(self, budgets: list[Budget], fraction: float) -> Budget | None:
        for budget in budgets:
            account = self._account(budget)
            if account.spent + account.reserved >= fraction * budget.amount:
                return budget
        return None

    def observe_spent(self, budget: Budget, spent: float, reserved: float = 0.0) -> None:
        """Adopt a spend seen elsewhere (the shared budget), if it is more than known here,
        and what is reserved there."""
        account = self._account(budget)
        account.spent = max(account.spent, spent)
        account.shared_reserved = reserved

    def reserve(self, budgets: list[Budget], estimate: float) -> None:
        for budget in budgets:
            self._account(budget).reserved += estimate

    def settle(self, budgets: list[Budget], estimate: float, actual: float) -> None:
        """Replace a reservation with the real cost."""
        for budget in budgets:
            account = self._account(budget)
            account.reserved = max(0.0, account.reserved - estimate)
            account.spent += actual
