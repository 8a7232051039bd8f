"""The ``iys`` connection, read once into :class:`IysConnectionSettings`.

The model holds every default of the connection in one place: the hook uses them, and
:func:`~iys_provider.get_provider_info.get_provider_info` shows them in the connection form.
Airflow calls ``get_provider_info`` while ``import airflow`` is still running, so this module
imports nothing from Airflow (nor from this package's modules that do) at module level.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iys_provider.config import DEFAULT_POSTGRES_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_BASE_URL = "https://api.iys.org.tr"
#: An egress label is part of the budget key: no "|" (the key's separator) and nothing invisible.
EGRESS_LABEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}"
EGRESS_LABEL = re.compile(f"^{EGRESS_LABEL_PATTERN}$")


#: The channels İYS pushes movements of, one registration (at most two URLs) each.
PUSH_CHANNELS = ("ARAMA", "MESAJ", "EPOSTA")


class PushCredentials(BaseModel):
    """The HTTP Basic user name and password İYS sends with its pushes to one channel's URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)


class IysConnectionSettings(BaseModel):
    """Everything the hook reads from the ``iys`` connection, validated once.

    ``base_url``, ``username`` and ``password`` come from the connection's host (with its schema
    and port), login and password. Every other field is the connection extra of the same name;
    an extra that is absent, ``null`` or empty takes the default, except ``shared_state_conn_id``,
    where ``null`` or empty means "no shared state".

    :param iys_code: the service provider's (HS) İYS number, as shown in the İYS panel.
    :param brand_code: the brand's İYS number; for a single-brand account it equals the İYS code.
    :param rate_limit_per_second: aggregate requests per second this package may send, shared by
        every task and worker through the shared state. İYS allows 10 per second per IP.
    :param auth_requests_per_hour: hard cap on token requests per hour from this installation
        (İYS blocks the IP for an hour above its own limit, H084).
    :param auth_block_seconds: how long no token request is made at all once İYS has blocked
        them (H084). İYS blocks for an hour and restarts that hour on every token call made
        during the block, so the default waits the whole hour out; lower it only for a test
        server with a shorter block.
    :param batch_result_delay_seconds: wait before polling an async batch result (İYS requires
        at least 300 s).
    :param timeout: connect and read timeout of each HTTP request, in seconds.
    :param success_ratio_floor: İYS de-whitelists an IP whose success ratio (successes ÷
        (successes + client errors)) stays under 70 %; when one more failure would put the
        last 24 hours under this floor, calls that can fail (single status, writes) are not
        made and the task fails naming the cause (:mod:`iys_provider.limits.success_ratio`).
    :param success_ratio_min_calls: the floor applies only from this many successes plus
        client errors in the last 24 hours, so a few 404s on a quiet day do not trip it.
    :param shared_state_conn_id: Postgres connection holding the shared token cache, token
        budget and rate limiter (schema ``iys``); ``None`` keeps them per process.
    :param egress_ip: a label for the public IP this worker's İYS traffic leaves from (the IP
        itself, or a name such as ``nat-a``). İYS counts the token budget, the H084 block and
        the 10 requests per second per client IP, whatever the account; workers with the same
        label share one budget, block and rate, workers with different labels get one each.
        Empty (the default): every worker of this installation leaves through one IP. Letters,
        digits and ``. _ : -``; compared without regard to case.
    :param verify_ssl: verify TLS certificates; only an explicit ``false``, ``0`` or ``no``
        turns verification off.
    :param proxies: the egress proxy for İYS requests, as ``requests`` takes it
        (``{"https": "http://proxy.internal:3128"}``); a single URL string means that proxy for
        both schemes. ``None`` leaves the worker's ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
        ``NO_PROXY`` environment in charge; when set, it takes precedence over that environment.
    :param push_username: the HTTP Basic user name İYS sends to the brand's push receiver, for
        every channel unless ``push_credentials`` names the channel.
    :param push_password: its password.
    :param push_credentials: per-channel user names and passwords,
        ``{"MESAJ": {"username": "…", "password": "…"}}``; a channel not named uses
        ``push_username`` / ``push_password``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    base_url: str
    username: str
    password: str = Field(repr=False)
    iys_code: int
    brand_code: int
    rate_limit_per_second: float = 8.0
    # Not "token_…": Airflow masks extras whose key contains "token" as secrets.
    auth_requests_per_hour: int = 10
    auth_block_seconds: int = 3600
    batch_result_delay_seconds: int = 300
    timeout: float = 30.0
    success_ratio_floor: float = Field(default=0.90, gt=0, le=1)
    success_ratio_min_calls: int = Field(default=1000, ge=0)
    shared_state_conn_id: str | None = DEFAULT_POSTGRES_CONN_ID
    egress_ip: str = ""
    verify_ssl: bool = True
    # May hold proxy credentials: kept out of repr and of validation messages.
    proxies: dict[str, str] | None = Field(default=None, repr=False)
    push_username: str | None = None
    push_password: str | None = Field(default=None, repr=False)
    push_credentials: dict[str, PushCredentials] | None = Field(default=None, repr=False)

    @classmethod
    def from_connection(cls, conn: Connection, *, brand_code: int | None = None) -> IysConnectionSettings:
        """Read ``conn``; ``brand_code`` overrides the connection's (accounts with several brands).

        :raises IysError: naming the connection, when the codes or the credentials are missing
            or an extra has a value of the wrong type.
        """
        from iys_provider.exceptions import IysError  # imports Airflow: see the module docstring

        extra = conn.extra_dejson
        missing = [name for name in ("iys_code", "brand_code") if extra.get(name) in (None, "")]
        if missing:
            raise IysError(
                f"Connection {conn.conn_id!r} lacks {', '.join(missing)}: set the İYS code and the brand "
                "code in the connection's extra fields (both are integers from the İYS panel)."
            )
        if not conn.login or not conn.password:
            raise IysError(f"Connection {conn.conn_id!r} needs the İYS API username (login) and password.")
        try:
            return cls.model_validate(
                {
                    **extra,
                    "base_url": _base_url(conn),
                    "username": conn.login,
                    "password": conn.password,
                    "brand_code": brand_code or extra["brand_code"],
                }
            )
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise IysError(f"Connection {conn.conn_id!r} has an invalid extra value: {problems}") from None

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            name: value for name, value in data.items() if name == "shared_state_conn_id" or value not in (None, "")
        }

    @field_validator("shared_state_conn_id", mode="before")
    @classmethod
    def _empty_means_no_shared_state(cls, value: Any) -> Any:
        return value or None

    @field_validator("egress_ip", mode="before")
    @classmethod
    def _egress_label(cls, value: Any) -> Any:
        # Lower case: "NAT-A" on one worker and "nat-a" on another must not get two budgets
        # for one IP, which would let them spend twice İYS's limit.
        if not isinstance(value, str):
            return value
        label = value.strip().lower()
        if label and not EGRESS_LABEL.match(label):
            raise ValueError("must be 1-100 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
        return label

    @field_validator("verify_ssl", mode="before")
    @classmethod
    def _only_an_explicit_no_turns_verification_off(cls, value: Any) -> bool:
        return str(value).lower() not in ("false", "0", "no")

    @field_validator("proxies", mode="before")
    @classmethod
    def _proxies_from_json_or_url(cls, value: Any) -> Any:
        """Accept the JSON object as text (``--conn-extra`` strings) and a bare proxy URL."""
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("{"):
                return json.loads(value)
            return {"http": value, "https": value}
        return value or None

    @field_validator("push_credentials", mode="before")
    @classmethod
    def _push_credentials_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(PUSH_CHANNELS))
            if unknown:
                raise ValueError(f"channels must be among {', '.join(PUSH_CHANNELS)}, not {', '.join(unknown)}")
        return value

    def push_credentials_for(self, channel: str) -> PushCredentials | None:
        """The Basic-auth pair İYS uses on ``channel``'s push registration; None when none is set."""
        named = (self.push_credentials or {}).get(channel)
        if named is not None:
            return named
        if self.push_username and self.push_password:
            return PushCredentials(username=self.push_username, password=self.push_password)
        return None

    @property
    def account_key(self) -> str:
        """Identifies the İYS account in the shared token cache, without revealing anything."""
        raw = f"{self.base_url}|{self.username}|{self.iys_code}"
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def ip_budget_key(self) -> str:
        """The client IP İYS counts against: the API host, plus the egress label when one is set.

        Every account leaving through one IP shares this key's token budget, H084 block, request
        rate and success ratio. Without a label it is the bare host, the key of the rows written
        before labels existed.
        """
        host = urlsplit(self.base_url).netloc or self.base_url
        return f"{host}|{self.egress_ip}" if self.egress_ip else host


def extra_default(name: str) -> Any:
    """The default of the extra ``name``: what the hook uses when the extra is left empty."""
    return IysConnectionSettings.model_fields[name].get_default()


def _base_url(conn: Connection) -> str:
    host = (conn.host or DEFAULT_BASE_URL).rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    if conn.port and urlsplit(host).port is None:
        host = f"{host}:{conn.port}"
    return host


def _describe(error: Any) -> str:
    """One validation error, naming the extra and the value (never the password or proxy URLs)."""
    name = ".".join(str(part) for part in error["loc"]) or "extra"
    if error["loc"][:1] not in (("password",), ("proxies",), ("push_password",), ("push_credentials",)):
        name += f"={error['input']!r}"
    return f"{name}: {error['msg']}"
