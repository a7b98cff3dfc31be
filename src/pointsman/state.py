"""Per-process routing state behind one small interface (in memory now; a shared backend can
implement the same methods)."""

from __future__ import annotations

from time import monotonic


class MemoryState:
    """Cooldowns: a deployment that answered 429 rests until its Retry-After has passed."""

    def __init__(self) -> None:
        self._cooldown_until: dict[str, float] = {}

    def cool_down(self, deployment: str, seconds: float) -> None:
        until = monotonic() + seconds
        if until > self._cooldown_until.get(deployment, 0.0):
            self._cooldown_until[deployment] = until

    def cooling_for(self, deployment: str) -> float:
        """Seconds left in the deployment's cooldown; 0 when it may be called."""
        until = self._cooldown_until.get(deployment)
        if until is None:
            return 0.0
        left = until - monotonic()
        if left <= 0:
            del self._cooldown_until[deployment]
            return 0.0
        return left
