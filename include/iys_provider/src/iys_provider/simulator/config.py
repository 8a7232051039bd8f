"""Runtime configuration of the simulator (every field can be changed through ``POST /__sim/config``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

UNKNOWN_STATUS_MODES = ("404", "empty")


@dataclass
class SimulatorConfig:
    username: str = "demo"
    password: str = "demo-secret"
    iys_code: int = 700001
    brand_codes: list[int] = field(default_factory=list)  # empty = [iys_code] (sandbox: master brand == iysCode)
    rate_limit_per_second: int = 10
    token_limit_per_hour: int = 10
    token_block_seconds: float = 3600
    access_ttl: int = 7200
    refresh_ttl: int = 14400
    batch_result_delay: float = 300
    batch_result_retention_days: float = 60
    single_status_limit_per_hour: int = 1000
    unknown_status_mode: str = "404"
    retry_after_header: bool = True
    latency_ms: float = 0
    seed: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.iys_code = int(self.iys_code)
        self.brand_codes = parse_brand_codes(self.brand_codes) or [self.iys_code]
        self.unknown_status_mode = str(self.unknown_status_mode)
        if self.unknown_status_mode not in UNKNOWN_STATUS_MODES:
            raise ValueError(f"unknown_status_mode must be one of {UNKNOWN_STATUS_MODES}")
        for name in ("rate_limit_per_second", "token_limit_per_hour", "single_status_limit_per_hour"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")

    def updated(self, changes: dict[str, Any]) -> SimulatorConfig:
        known = {item.name for item in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config option(s): {sorted(unknown)}")
        return SimulatorConfig(**{**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["password"] = "***"
        return data


def parse_brand_codes(value: Any) -> list[int]:
    """Accept 700001, "700001,700002", ["700001", 700002] or nested combinations."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        codes: list[int] = []
        for item in value:
            codes.extend(parse_brand_codes(item))
        return codes
    if isinstance(value, str):
        return [int(part) for part in value.split(",") if part.strip()]
    return [int(value)]
