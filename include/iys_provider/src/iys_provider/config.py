"""The deployment settings: one reading, in Airflow's ``[iys]`` configuration section.

Every setting an installation chooses once (which brands, which pool, schedules, default
retention, …) is read here and nowhere else. Each option of :data:`OPTIONS` is found, first
match wins, in:

1. ``AIRFLOW__IYS__<OPTION>``, Airflow's own environment spelling of ``[iys] <option>``;
2. ``IYS_<OPTION>``, the package's older spelling (docker-compose.yaml,
   ``scripts/airflow_local.sh`` and existing deployments set these), kept as an alias. Setting both
   to different values is an error rather than a silent choice;
3. ``[iys] <option>`` as Airflow reads it otherwise: ``airflow.cfg``, then the default this
   provider declares (``get_provider_info``'s ``config``, which ``airflow config list`` shows).

An empty ``IYS_<OPTION>`` is ignored (compose files pass unset variables as empty strings); an
empty value found otherwise means the option's default. Values are parsed and checked by
:func:`load_settings` into an :class:`IysSettings`, with an error naming the variable or option
it came from. The DAG files read the settings once per parse and hand the
values to the tasks as arguments: a worker runs a task with what its parse of the DAG file gave,
and no task reads a setting again when it executes.

Nothing here does I/O at import: the provider metadata (``get_provider_info``) imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from iys_provider.initial_sync.scan_ledger import DEFAULT_PARALLEL_BATCHES
from iys_provider.reconciliation.rules import DEFAULT_FILE_FORMAT, DEFAULT_MAX_WAIT, file_format

#: The Airflow configuration section of this provider.
SECTION = "iys"
#: The Postgres connection holding the ``iys`` schema and the users, unless a task is told another.
DEFAULT_POSTGRES_CONN_ID = "iys_postgres"
#: The ``iys`` connection used when no other is named (``IysHook.default_conn_name``).
DEFAULT_IYS_CONN_ID = "iys_default"
#: Where the cron schedules are read (the DAGs' timezone).
TIMEZONE = "Europe/Istanbul"
#: The provider version in which the ``[iys]`` section appeared (``version_added`` of its options).
SECTION_ADDED_IN = "0.1.0"

# A connection id becomes part of a DAG id, a tag, an asset name and URI and a Variable key: only
# characters all of them accept unchanged, and never "." or ".." as a URI path segment. Airflow
# caps a tag at 100 characters, "brand:" included.
_CONN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_CONN_ID_LENGTH = 100 - len("brand:")
# Characters a POSIX shell accepts in a variable name it can export.
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class IysConfigError(ValueError):
    """A deployment setting that cannot be used; the message names where it was set and why."""


class IysSettings(BaseModel):
    """The parsed deployment settings (see :data:`OPTIONS` for what each means and its default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connections: tuple[str, ...] = (DEFAULT_IYS_CONN_ID,)
    pool: str | None = None
    api_concurrency: int = Field(DEFAULT_PARALLEL_BATCHES, ge=1)
    pool_check_seconds: float = Field(300, ge=0)
    queue: str | None = None
    initial_sync_cron: str | None = "0 1 * * *"
    incremental_sync_cron: str | None = "0 2 * * *"
    reconciliation_cron: str | None = "0 5 * * *"
    consent_events_retention_days: int | None = None
    finished_updates_retention_days: int | None = None
    # operators.reconciliation.DEFAULT_ARCHIVE (that module imports Airflow; this one must not).
    reconciliation_archive: str = "default"
    reconciliation_file_format: str = DEFAULT_FILE_FORMAT
    reconciliation_hash_wait_minutes: float = Field(DEFAULT_MAX_WAIT.total_seconds() / 60, ge=0)
    deferrable_waits: bool = False
    dashboard_postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID
    push_postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID
    push_receiver_host: str = "127.0.0.1"
    push_receiver_port: int = Field(8095, ge=1, le=65535)
    push_receiver_tls_certfile: str | None = None
    push_receiver_tls_keyfile: str | None = None
    # Only how often consumers hear of pushes: the consents change when the receiver answers İYS.
    push_poll_seconds: float = Field(30.0, gt=0)


@dataclass(frozen=True)
class Option:
    """One option of ``[iys]``: its spellings, how its text is read, and what it is for."""

    name: str
    type: str  # the option type Airflow's provider metadata knows: string, integer, float, boolean
    parse: Callable[[str, str], Any]  # (text, where it was set) -> value; raises IysConfigError
    read_where: str
    description: str
    example: str | None = None

    @property
    def airflow_variable(self) -> str:
        """Airflow's environment spelling of the option."""
        return f"AIRFLOW__{SECTION.upper()}__{self.name.upper()}"

    @property
    def alias(self) -> str:
        """The older environment variable, still read."""
        return f"IYS_{self.name.upper()}"

    @property
    def default(self) -> Any:
        return IysSettings.model_fields[self.name].default

    @property
    def default_text(self) -> str | None:
        """The default as written in ``airflow.cfg`` (None: unset)."""
        value = self.default
        if value is None:
            return None
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, bool):
            return str(value).lower()
        return format(value, "g") if isinstance(value, float) else str(value)


# --- parsers: (text, label) -> value; text is stripped and never empty ------------------------


def parse_connection_ids(text: str, label: str = "IYS_CONNECTIONS") -> tuple[str, ...]:
    """The connection ids of a comma-separated list (blanks and empty items ignored; none: ``iys_default``).

    Raises :class:`IysConfigError`, naming the id, for an id that cannot be part of a DAG id and
    for an id listed twice. Ids with ``-`` or ``.`` are valid Airflow connection ids and are
    accepted; see :func:`connection_environment_variable` for how to set one in the environment.
    """
    ids = [item.strip() for item in text.split(",") if item.strip()]
    for conn_id in ids:
        if not _CONN_ID.fullmatch(conn_id) or len(conn_id) > MAX_CONN_ID_LENGTH:
            raise IysConfigError(
                f"{label}: {conn_id!r} cannot name a brand's DAGs; a connection id there holds only "
                "ASCII letters, digits, '_', '.' and '-', starts with a letter, a digit or '_', and has at most "
                f"{MAX_CONN_ID_LENGTH} characters"
            )
    twice = sorted({conn_id for conn_id in ids if ids.count(conn_id) > 1})
    if twice:
        raise IysConfigError(f"{label} lists {', '.join(twice)} more than once; list each connection once")
    return tuple(ids) or (DEFAULT_IYS_CONN_ID,)


def _pool(text: str, label: str) -> str | None:
    return None if text.lower() in ("none", "default_pool") else text


def _positive_int(text: str, label: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise IysConfigError(f"{label} must be a whole number of at least 1, not {text!r}")
    return value


def _seconds(text: str, label: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise IysConfigError(f"{label} must be a number of seconds (0 or more), not {text!r}")
    return value


def _minutes(text: str, label: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise IysConfigError(f"{label}={text!r} is not a number of minutes") from None
    if not value >= 0:
        raise IysConfigError(f"{label}={text!r} must be 0 minutes or more")
    return value


def _text(text: str, label: str) -> str:
    return text


def _port(text: str, label: str) -> int:
    value = _positive_int(text, label)
    if value > 65535:
        raise IysConfigError(f"{label} must be a TCP port (1-65535), not {text!r}")
    return value


def _positive_seconds(text: str, label: str) -> float:
    value = _seconds(text, label)
    if value == 0:
        raise IysConfigError(f"{label} must be a number of seconds above 0, not {text!r}")
    return value


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _boolean(text: str, label: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise IysConfigError(f"{label} must be true or false, not {text!r}")


def _cron(text: str, label: str) -> str | None:
    if text.lower() in ("none", "off"):
        return None
    from airflow.sdk import CronTriggerTimetable
    from airflow.sdk.exceptions import AirflowTimetableInvalid

    try:
        CronTriggerTimetable(text, timezone=TIMEZONE).validate()
    except AirflowTimetableInvalid as exc:
        raise IysConfigError(
            f"{label}={text!r} is not a cron expression ('none' disables the schedule): {exc}"
        ) from None
    return text


def _consent_events_days(text: str, label: str) -> int | None:
    from iys_provider.people.retention import RetentionPolicy

    try:
        return RetentionPolicy.from_arguments(text, None).consent_events_days
    except ValueError as exc:
        raise IysConfigError(f"{label}={text!r}: {exc}") from None


def _finished_updates_days(text: str, label: str) -> int | None:
    from iys_provider.people.retention import RetentionPolicy

    try:
        return RetentionPolicy.from_arguments(None, text).finished_updates_days
    except ValueError as exc:
        raise IysConfigError(f"{label}={text!r}: {exc}") from None


def _file_format(text: str, label: str) -> str:
    try:
        file_format(text)
    except ValueError as exc:
        raise IysConfigError(f"{label}={text!r}: {exc}") from None
    return text


_DAG_PARSE = "DAG files (DAG processor and workers, at parse time)"

#: Every deployment setting, in the order docs/configuration.md lists them.
OPTIONS: tuple[Option, ...] = (
    Option(
        "connections",
        "string",
        parse_connection_ids,
        _DAG_PARSE,
        "The iys connections to sync, comma-separated; one set of DAGs per connection. Unset or one id: the DAGs "
        "keep their plain ids; several: each DAG id ends in __<conn_id>. Ids hold ASCII letters, digits, '_', "
        "'.' and '-', start with a letter, a digit or '_', at most 94 characters.",
        "iys_brand_a,iys_brand_b",
    ),
    Option(
        "pool",
        "string",
        _pool,
        _DAG_PARSE,
        "Airflow pool of the tasks that call İYS, shared by every DAG using it; unset, 'none' or "
        "'default_pool': default_pool. A named pool must exist: the first task of each run checks it.",
        "iys_api",
    ),
    Option(
        "api_concurrency",
        "integer",
        _positive_int,
        _DAG_PARSE,
        "Tasks calling İYS at once per DAG run (max_active_tis_per_dagrun); also the number of parallel batches "
        "the initial sync shapes its plan for. At least 1.",
        "2",
    ),
    Option(
        "pool_check_seconds",
        "float",
        _seconds,
        _DAG_PARSE,
        "How long the pool check of each run waits for a slot of the pool before failing the run.",
        "600",
    ),
    Option(
        "queue",
        "string",
        _text,
        _DAG_PARSE,
        "Executor queue (CeleryExecutor) of the tasks that call İYS: the workers whose egress IP İYS has "
        "whitelisted consume it. Unset: the executor's default queue.",
        "iys",
    ),
    Option(
        "initial_sync_cron",
        "string",
        _cron,
        _DAG_PARSE,
        "Schedule of iys_initial_sync (cron, Turkey time); 'none' disables it.",
        "none",
    ),
    Option(
        "incremental_sync_cron",
        "string",
        _cron,
        _DAG_PARSE,
        "Schedule of iys_incremental_sync (cron, Turkey time); 'none' disables it.",
        "0 * * * *",
    ),
    Option(
        "reconciliation_cron",
        "string",
        _cron,
        _DAG_PARSE,
        "Schedule of iys_reconciliation (cron, Turkey time); 'none' disables it.",
        "0 6 * * *",
    ),
    Option(
        "consent_events_retention_days",
        "integer",
        _consent_events_days,
        _DAG_PARSE + "; default of the incremental sync's Param",
        "Days to keep iys.consent_events rows (at least 8); unset or 'none': keep forever.",
        "90",
    ),
    Option(
        "finished_updates_retention_days",
        "integer",
        _finished_updates_days,
        _DAG_PARSE + "; default of the incremental sync's Param",
        "Days to keep settled iys.consent_updates rows (at least 1); unset or 'none': keep forever.",
        "365",
    ),
    Option(
        "reconciliation_archive",
        "string",
        _text,
        _DAG_PARSE + "; default of the reconciliation's Param",
        "Where the reconciliation keeps each day's file and timestamp (.tsr): an ObjectStoragePath URL; "
        "'default': the folder iys-evidence under the worker's Airflow home; 'none': no archive.",
        "s3://aws_default@bucket/iys",
    ),
    Option(
        "reconciliation_file_format",
        "string",
        _file_format,
        _DAG_PARSE + "; default of the reconciliation's Param",
        "'auto' reads İYS's daily file by its content; a reading such as 'no_header+crlf' overrides what our "
        "file is written in (docs/reconciliation.md).",
        "no_header+crlf",
    ),
    Option(
        "reconciliation_hash_wait_minutes",
        "float",
        _minutes,
        _DAG_PARSE + "; default of the reconciliation's Param",
        "How long a day's unfinished İYS hash job is waited for before the day is left pending for the next run.",
        "30",
    ),
    Option(
        "deferrable_waits",
        "boolean",
        _boolean,
        _DAG_PARSE,
        "Wait for İYS's batch results and the reconciliation's hash on the triggerer (deferrable sensors) "
        "instead of rescheduling the tasks: no worker slot and no task start per look, but the triggerer then "
        "calls İYS, so its egress IP must be whitelisted by İYS too.",
        "true",
    ),
    Option(
        "dashboard_postgres_conn_id",
        "string",
        _text,
        "API server, when the İYS page starts",
        "Postgres connection the İYS page reads (read only).",
        "iys_postgres_readonly",
    ),
    Option(
        "push_postgres_conn_id",
        "string",
        _text,
        "the push receiver at start; DAG files (the push DAG)",
        "Postgres connection the push receiver writes İYS's pushed movements to, and the push DAG reads.",
        "iys_postgres",
    ),
    Option(
        "push_receiver_host",
        "string",
        _text,
        "the push receiver at start",
        "Address the push receiver listens on; 0.0.0.0 behind a proxy in another container or host.",
        "0.0.0.0",
    ),
    Option(
        "push_receiver_port",
        "integer",
        _port,
        "the push receiver at start",
        "Port the push receiver listens on.",
        "8095",
    ),
    Option(
        "push_receiver_tls_certfile",
        "string",
        _text,
        "the push receiver at start",
        "Certificate (PEM) for the receiver to serve https itself; unset: plain http behind the brand's "
        "TLS-terminating proxy (İYS only registers https URLs).",
        "/etc/iys/push.pem",
    ),
    Option(
        "push_receiver_tls_keyfile",
        "string",
        _text,
        "the push receiver at start",
        "Private key of push_receiver_tls_certfile.",
        "/etc/iys/push.key",
    ),
    Option(
        "push_poll_seconds",
        "float",
        _positive_seconds,
        "the triggerer (the push DAG's event trigger)",
        "How often the push DAG's trigger looks for newly pushed movements to tell the consents asset's "
        "consumers about: at most one iys_push run and consents asset event per period. The consents "
        "themselves change when the receiver answers İYS.",
        "10",
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _configured_text(option: Option) -> tuple[str, str] | None:
    """Where ``option`` is set and its text, or None when it is not (or only to an empty value)."""
    from airflow.sdk import conf

    airflow_text = os.environ.get(option.airflow_variable, "").strip()
    alias_text = os.environ.get(option.alias, "").strip()
    if airflow_text and alias_text and airflow_text != alias_text:
        raise IysConfigError(
            f"{option.airflow_variable}={airflow_text!r} and {option.alias}={alias_text!r} disagree; set one of them "
            f"({option.alias} is the older name of [{SECTION}] {option.name})"
        )
    if airflow_text:
        return option.airflow_variable, airflow_text
    if alias_text:
        return option.alias, alias_text
    # airflow.cfg, *_cmd / *_secret and the provider's declared default, as Airflow resolves them.
    configured = conf.get(SECTION, option.name, fallback=None)
    text = "" if configured is None else str(configured).strip()
    return (f"[{SECTION}] {option.name}", text) if text else None


def load_settings(*names: str) -> IysSettings:
    """The deployment settings, read and checked now; ``names`` limits the reading to those options.

    The others then keep their defaults, so a part of the product that needs one setting (the İYS
    page) does not fail over a mistake in another. Raises :class:`IysConfigError` naming the
    variable or option at fault.
    """
    unknown = sorted(set(names) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ValueError(f"no such [{SECTION}] option: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for option in (OPTIONS_BY_NAME[name] for name in names) if names else OPTIONS:
        found = _configured_text(option)
        if found is not None:
            label, text = found
            values[option.name] = option.parse(text, label)
    return IysSettings(**values)


def provider_config() -> dict[str, Any]:
    """The ``config`` entry of the provider metadata: the ``[iys]`` section and its options' defaults."""
    return {
        SECTION: {
            "description": "Deployment settings of the İYS provider (see docs/configuration.md). Each option can "
            f"also be set as AIRFLOW__{SECTION.upper()}__<OPTION> or, as before, IYS_<OPTION>.",
            "options": {
                option.name: {
                    "description": option.description,
                    "version_added": SECTION_ADDED_IN,
                    "type": option.type,
                    "example": option.example,
                    "default": option.default_text,
                }
                for option in OPTIONS
            },
        }
    }


def connection_environment_variable(conn_id: str) -> str:
    """The environment variable Airflow reads a connection ``conn_id`` from (``AIRFLOW_CONN_`` + upper case).

    Airflow keeps every other character as it is: ``iys-brand.a`` is read from
    ``AIRFLOW_CONN_IYS-BRAND.A``, a name the environment holds but a shell cannot ``export``.
    """
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def variable_environment_variable(key: str) -> str:
    """The environment variable Airflow reads the Variable ``key`` from (``AIRFLOW_VAR_`` + upper case)."""
    return f"AIRFLOW_VAR_{key.upper()}"


def shell_can_export(name: str) -> bool:
    """Whether a POSIX shell (``export``, ``.env`` files sourced by it) can set an environment variable ``name``."""
    return _SHELL_NAME.fullmatch(name) is not None
