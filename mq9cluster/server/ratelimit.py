"""A token bucket: at most ``rate`` events a second on average, bursts up to ``burst``.

Pure: the caller passes the time, so tests need no clock.
"""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` events a second, with up to ``burst`` at once after a quiet spell."""

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
