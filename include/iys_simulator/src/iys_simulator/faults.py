"""Fault injection: latency, random errors, dropped connections and scripted failures."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FailRule:
    """Answer the next ``count`` requests whose path contains ``path_contains`` with an error."""

    path_contains: str
    status: int = 503
    code: str = "H192"
    count: int = 1
    retry_after: float | None = None
    body: str | None = None  # raw body override, e.g. "not json"
    method: str | None = None
    index: int | None = None  # error item "index", e.g. to name one item of a batch submit
    location: list | None = None  # error item "location", e.g. ["recipient"]


@dataclass
class FaultSettings:
    latency_ms: float = 0
    latency_jitter_ms: float = 0
    latency_spike_rate: float = 0.0
    latency_spike_ms: float = 0
    error_rate: float = 0.0  # 500 H015 or 503 H192
    drop_rate: float = 0.0  # close the socket without a response, before processing
    # The same faults on every n-th İYS request (counted from the simulator's start or reset), on top of
    # the rates: a scenario of a few dozen requests is then certain to meet each kind, which a rate is not.
    error_every: int = 0
    drop_every: int = 0
    spike_every: int = 0
    html_error_rate: float = 0.0  # 502 with an HTML page, as a proxy would answer
    drop_after_commit_next: int = 0  # next N write requests are committed, then the connection is closed
    fail_next: list[FailRule] = field(default_factory=list)
    enqueue_rate: float = 0.0  # batch items reported as "enqueue" (processed late)
    # Batch results report every not-yet-reported item with this status (e.g. "processing") instead
    # of its real one; the real processing goes on and shows once the setting is cleared (None).
    batch_item_status: str | None = None
    apply_to_control: bool = False
    # Transaction ids the change feed never serves, though they stay in the daily reconciliation file
    # (a movement the client's feed missed, for the repair path).
    feed_omits_transactions: list[str] = field(default_factory=list)
    # Push delivery (push.py): after a 2xx, the share of lists delivered a second time; how many queued
    # movements of a link are taken at once and sent in a shuffled order (0 or 1: in order); the most
    # movements in one list; queue movements but send nothing.
    push_duplicate_rate: float = 0.0
    push_reorder_window: int = 0
    push_batch_size: int = 1
    push_paused: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any], base: FaultSettings | None = None) -> FaultSettings:
        """Merge ``data`` into ``base`` (or defaults); unknown keys raise ValueError."""
        settings = cls(**{**asdict(base or cls()), "fail_next": list((base or cls()).fail_next)})
        for name, value in data.items():
            if name == "fail_next":
                settings.fail_next = [rule if isinstance(rule, FailRule) else FailRule(**rule) for rule in value or []]
            elif name in cls.__dataclass_fields__:
                setattr(settings, name, value)
            else:
                raise ValueError(f"unknown fault option {name!r}")
        settings._check_push()
        return settings

    def _check_push(self) -> None:
        self.push_duplicate_rate = float(self.push_duplicate_rate)
        if not 0 <= self.push_duplicate_rate <= 1:
            raise ValueError("push_duplicate_rate must be between 0 and 1")
        self.push_reorder_window = int(self.push_reorder_window)
        if self.push_reorder_window < 0:
            raise ValueError("push_reorder_window must not be negative")
        self.push_batch_size = int(self.push_batch_size)
        if self.push_batch_size < 1:
            raise ValueError("push_batch_size must be at least 1")
        if not isinstance(self.push_paused, bool):
            raise ValueError("push_paused must be true or false")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Draws faults from a seeded ``random.Random`` so a given seed replays the same fault sequence."""

    def __init__(self, seed: int | None) -> None:
        self.settings = FaultSettings()
        self._random = random.Random(seed)
        self._ordinal = 0  # İYS requests seen, for the *_every options

    def count_request(self) -> None:
        """One more İYS request (control API requests do not count)."""
        self._ordinal += 1

    def _nth(self, every: int) -> bool:
        return every > 0 and self._ordinal > 0 and self._ordinal % every == 0

    def latency_seconds(self, base_latency_ms: float) -> float:
        return self.latency(base_latency_ms)[0]

    def latency(self, base_latency_ms: float) -> tuple[float, bool]:
        """Seconds to hold the request, and whether a latency spike was drawn (counted as ``latency_spikes``)."""
        settings = self.settings
        latency = base_latency_ms + settings.latency_ms
        if settings.latency_jitter_ms:
            latency += self._random.uniform(0, settings.latency_jitter_ms)
        spiked = bool(settings.latency_spike_rate) and self._random.random() < settings.latency_spike_rate
        spiked = spiked or self._nth(settings.spike_every)
        if spiked:
            latency += settings.latency_spike_ms
        return max(latency, 0) / 1000.0, spiked

    def should_drop(self) -> bool:
        drawn = bool(self.settings.drop_rate) and self._random.random() < self.settings.drop_rate
        return drawn or self._nth(self.settings.drop_every)

    def html_error(self) -> bool:
        return bool(self.settings.html_error_rate) and self._random.random() < self.settings.html_error_rate

    def random_error_code(self) -> str | None:
        drawn = bool(self.settings.error_rate) and self._random.random() < self.settings.error_rate
        if drawn or self._nth(self.settings.error_every):
            return self._random.choice(("H015", "H192"))
        return None

    def take_fail_rule(self, method: str, path: str) -> FailRule | None:
        for rule in self.settings.fail_next:
            if rule.count > 0 and rule.path_contains in path and (rule.method is None or rule.method == method):
                rule.count -= 1
                if rule.count == 0:
                    self.settings.fail_next.remove(rule)
                return rule
        return None

    def take_drop_after_commit(self) -> bool:
        if self.settings.drop_after_commit_next > 0:
            self.settings.drop_after_commit_next -= 1
            return True
        return False

    def enqueue_item(self) -> bool:
        return bool(self.settings.enqueue_rate) and self._random.random() < self.settings.enqueue_rate
