"""Sliding-window rate limiters used by the simulator (callers hold the application lock)."""

from __future__ import annotations

from collections import deque


class SlidingWindowLimiter:
    """At most ``limit`` accepted events per ``window`` seconds per key; rejected events are not recorded."""

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}

    def try_acquire(self, key: str, now: float, limit: int, window: float) -> bool:
        timestamps = self._accepted.setdefault(key, deque())
        while timestamps and timestamps[0] <= now - window:
            timestamps.popleft()
        if len(timestamps) >= limit:
            return False
        timestamps.append(now)
        return True

    def clear(self, key: str | None = None) -> None:
        if key is None:
            self._accepted.clear()
        else:
            self._accepted.pop(key, None)


class TokenRequestLimiter:
    """İYS token quota: ``limit`` token requests per rolling hour per IP.

    The request that exceeds the quota starts a block of ``block_seconds``; every token request made
    while blocked is refused and restarts the block (İYS: "retrying restarts the 1-hour counter").
    """

    def __init__(self) -> None:
        self._window = SlidingWindowLimiter()
        self._blocked_until: dict[str, float] = {}

    def try_acquire(self, ip: str, now: float, limit: int, block_seconds: float) -> bool:
        if self._blocked_until.get(ip, float("-inf")) > now:
            self._blocked_until[ip] = now + block_seconds
            return False
        if not self._window.try_acquire(ip, now, limit, 3600.0):
            self._blocked_until[ip] = now + block_seconds
            self._window.clear(ip)  # the block replaces the window; afterwards a fresh quota applies
            return False
        return True

    def blocked_until(self, ip: str) -> float | None:
        return self._blocked_until.get(ip)
