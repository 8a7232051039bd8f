"""Runtime configuration of the simulator (every field can be changed through ``POST /__sim/config``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .validation import normalise_recipient

# What single status answers for an address İYS does not hold (İYS does not document this case):
#   "404"       404 with the simulator-only code H000 (default)
#   "empty"     200 with an empty body
#   "422"       422 {"errors":[{"code": unknown_status_code, ..., "location":["recipient"]}]}
#   "malformed" 200 with a JSON object that is not the documented status shape
UNKNOWN_STATUS_MODES = ("404", "empty", "422", "malformed")


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
    unknown_status_code: str = "H114"  # code of the "422" unknown_status_mode
    # address -> H-code: writes naming the address fail with 422 and that code (request level)
    refused_recipients: dict[str, str] = field(default_factory=dict)
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
        self.unknown_status_code = str(self.unknown_status_code)
        if not self.unknown_status_code:
            raise ValueError("unknown_status_code must not be empty")
        self.refused_recipients = parse_refused_recipients(self.refused_recipients)
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


def parse_refused_recipients(value: Any) -> dict[str, str]:
    """``{"+905321112233": "H122", "A@b.com": "H120"}`` with addresses normalised like İYS stores them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("refused_recipients must be an object mapping address -> H-code")
    refused: dict[str, str] = {}
    for address, code in value.items():
        if not isinstance(address, str) or not address or not isinstance(code, str) or not code:
            raise ValueError("refused_recipients must map non-empty addresses to non-empty H-codes")
        refused[normalise_recipient(address)] = code
    return refused


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
