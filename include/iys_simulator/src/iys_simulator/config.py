"""Runtime configuration of the simulator (every field can be changed through ``POST /__sim/config``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .reconciliation import check_reconciliation_config
from .validation import normalise_recipient

# What single status answers for an address İYS does not hold (İYS does not document this case):
#   "404"       404 with the simulator-only code H000 (default)
#   "empty"     200 with an empty body
#   "422"       422 {"errors":[{"code": unknown_status_code, ..., "location":["recipient"]}]}
#   "malformed" 200 with a JSON object that is not the documented status shape
UNKNOWN_STATUS_MODES = ("404", "empty", "422", "malformed")


ACCOUNT_FIELDS = ("username", "password", "iys_code", "brand_codes")


@dataclass(frozen=True)
class SimAccount:
    """One İYS API user: its service provider (iysCode) and the brands its token may act for."""

    username: str
    password: str
    iys_code: int
    brand_codes: tuple[int, ...]


@dataclass
class SimulatorConfig:
    username: str = "demo"
    password: str = "demo-secret"
    iys_code: int = 700001
    brand_codes: list[int] = field(default_factory=list)  # empty = [iys_code] (sandbox: master brand == iysCode)
    # More API users on the same server, as {"username", "password", "iys_code", "brand_codes"} objects
    # (brand_codes may be omitted: [iys_code]). Each token acts only for its own account's codes; the
    # per-IP limits (token quota and H084, requests per second, single-status quota) are shared by all.
    extra_accounts: list[dict[str, Any]] = field(default_factory=list)
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
    # Daily reconciliation (reconciliation.py): the hash job's timing and mode ("normal", "error",
    # "stuck_queued") per report date ("*" = every other date), the hash İYS reports, the file's
    # reading (header line, line end "\n" or "\r\n", UTF-8 BOM, 8 columns or FAQ Q1's 7, a trailing
    # comma), the spelling of the PUT answer's field and the 7-day window.
    reconciliation_queue_seconds: float = 30
    reconciliation_hash_seconds: float = 90
    reconciliation_job_modes: dict[str, str] = field(default_factory=dict)
    reconciliation_hash_algorithm: str = "sha384"
    reconciliation_hash_method: str = "SHA384"
    reconciliation_file_header: bool = True
    reconciliation_file_line_end: str = "\n"
    reconciliation_file_bom: bool = False
    reconciliation_file_columns: int = 8
    reconciliation_file_trailing_comma: bool = False
    reconciliation_captured_field: str = "agreementCaptured"
    reconciliation_window_days: int = 7
    # Push (push.py): how long İYS waits for a receiver (the link check and every delivery), the first
    # retry delay of a failed delivery (doubling up to the cap), and the CA file (PEM) receivers'
    # certificates are verified against (None: the system's CAs, as İYS verifies a real receiver).
    push_timeout_seconds: float = 5
    push_retry_seconds: float = 1
    push_retry_max_seconds: float = 30
    push_ca_file: str | None = None
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
        check_reconciliation_config(self)
        self.extra_accounts = parse_extra_accounts(self.extra_accounts)
        self._check_accounts_are_distinct()
        for name in ("rate_limit_per_second", "token_limit_per_hour", "single_status_limit_per_hour"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("push_timeout_seconds", "push_retry_seconds", "push_retry_max_seconds"):
            setattr(self, name, float(getattr(self, name)))
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        self.push_ca_file = str(self.push_ca_file) if self.push_ca_file else None

    def _check_accounts_are_distinct(self) -> None:
        # Consents are stored per brand code, so a brand must belong to exactly one account.
        seen_users: set[str] = set()
        seen_codes: set[int] = set()
        seen_brands: set[int] = set()
        for account in self.accounts():
            if account.username in seen_users:
                raise ValueError(f"username {account.username!r} is used by two accounts")
            if account.iys_code in seen_codes:
                raise ValueError(f"iys_code {account.iys_code} is used by two accounts")
            shared = seen_brands & set(account.brand_codes)
            if shared:
                raise ValueError(f"brand code(s) {sorted(shared)} belong to two accounts")
            seen_users.add(account.username)
            seen_codes.add(account.iys_code)
            seen_brands.update(account.brand_codes)

    def accounts(self) -> list[SimAccount]:
        """The main account (the top-level username, password, iys_code, brand_codes) first."""
        main = SimAccount(self.username, self.password, self.iys_code, tuple(self.brand_codes))
        return [main] + [
            SimAccount(extra["username"], extra["password"], extra["iys_code"], tuple(extra["brand_codes"]))
            for extra in self.extra_accounts
        ]

    def account(self, username: str) -> SimAccount | None:
        return next((account for account in self.accounts() if account.username == username), None)

    def account_of_iys_code(self, iys_code: int) -> SimAccount | None:
        return next((account for account in self.accounts() if account.iys_code == iys_code), None)

    def updated(self, changes: dict[str, Any]) -> SimulatorConfig:
        known = {item.name for item in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config option(s): {sorted(unknown)}")
        return SimulatorConfig(**{**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["password"] = "***"
        data["extra_accounts"] = [{**account, "password": "***"} for account in data["extra_accounts"]]
        return data


def parse_extra_accounts(value: Any) -> list[dict[str, Any]]:
    """``[{"username": "b", "password": "p", "iys_code": 700100, "brand_codes": [700100, 700101]}]``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("extra_accounts must be a list of account objects")
    accounts: list[dict[str, Any]] = []
    for position, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise ValueError(f"extra_accounts[{position}] must be an object")
        unknown = set(raw) - set(ACCOUNT_FIELDS)
        if unknown:
            raise ValueError(f"extra_accounts[{position}]: unknown field(s) {sorted(unknown)}")
        missing = [name for name in ("username", "password", "iys_code") if raw.get(name) in (None, "")]
        if missing:
            raise ValueError(f"extra_accounts[{position}]: missing field(s) {missing}")
        iys_code = int(raw["iys_code"])
        accounts.append(
            {
                "username": str(raw["username"]),
                "password": str(raw["password"]),
                "iys_code": iys_code,
                "brand_codes": parse_brand_codes(raw.get("brand_codes")) or [iys_code],
            }
        )
    return accounts


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
