"""What every İYS operator and sensor shares: the two connections, migrations, the retry policy, and failing
without retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from airflow.sdk import BaseOperator, RetryAction, RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException

from iys_provider.config import DEFAULT_POSTGRES_CONN_ID
from iys_provider.database import iys_database
from iys_provider.exceptions import IysStepFailure
from iys_provider.hooks.iys import IysHook
from iys_provider.limits.retry_policy import RetryVerdict, retry_advice
from iys_provider.lineage import (
    LineagePlaces,
    TaskLineage,
    iys_dataset_name,
    iys_namespace,
    operator_lineage,
    source_tables,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

#: The pool name docs/configuration.md suggests when İYS work should share a budget across DAGs. No task
#: uses a pool unless one is configured (``[iys] pool``, see :mod:`iys_provider.config`).
IYS_POOL = "iys_api"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IysRetryPolicy(RetryPolicy):
    """The default ``retry_policy`` of every İYS operator and sensor: İYS's answers decide the retry.

    A refusal (a business H-code, a 4xx, credentials) fails the task at once, whatever its
    ``retries``: İYS counts each repeat against the IP's success ratio. A token block (H084) or an
    hourly quota retries once it is over; a per-second limit or a server fault retries shortly.
    Anything that is not İYS's answer (the database, the network) gets the task's own
    ``retries`` and ``retry_delay``. The verdicts are :func:`iys_provider.limits.retry_policy.retry_advice`.
    Airflow never tries a task more than its ``retries`` allow: with ``retries=0`` a block still fails it.

    :param clock: the current time (timezone-aware), for the wait until a block ends.
    """

    _ACTIONS = {
        RetryVerdict.RETRY: RetryAction.RETRY,
        RetryVerdict.FAIL: RetryAction.FAIL,
        RetryVerdict.DEFAULT: RetryAction.DEFAULT,
    }

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.clock = clock

    def evaluate(
        self, exception: BaseException, try_number: int, max_tries: int, context: Context | None = None
    ) -> RetryDecision:
        advice = retry_advice(exception, self.clock())
        return RetryDecision(action=self._ACTIONS[advice.verdict], retry_delay=advice.delay, reason=advice.reason)

    def serialize(self) -> dict[str, Any]:
        # Airflow stores only that a task has a policy; the worker evaluates the one in the DAG file.
        return {"__type": "IysRetryPolicy"}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> IysRetryPolicy:
        return cls()


#: The default ``retry_policy`` of the İYS operators and sensors. A parameter default (not set in the
#: body of ``__init__``) so that ``.partial()`` of a mapped task, which reads the defaults from the
#: signature, gets it too, and the DAG's ``default_args`` still win over it.
IYS_RETRY_POLICY = IysRetryPolicy()


class IysConnections:
    """The İYS hook and the database connection of a task: what every İYS operator and sensor shares.

    A task class calls :meth:`_use_connections` from its ``__init__``; :meth:`database` then opens
    the migrated connection and closes it, and the hook this task created, on every way out.
    """

    iys_conn_id: str
    postgres_conn_id: str
    hook_params: dict[str, Any]
    log: Any
    #: What the task reads and writes, for OpenLineage (:mod:`iys_provider.lineage`); ``None``: nothing.
    lineage: ClassVar[TaskLineage | None] = None
    #: The source query the task read its users with, kept for OpenLineage (see ``_openlineage_facets``).
    _lineage_source_sql: str | None = None

    def _use_connections(self, iys_conn_id: str, postgres_conn_id: str, hook_params: dict[str, Any] | None) -> None:
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.hook_params = dict(hook_params or {})

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)

    @contextmanager
    def database(self) -> Iterator[psycopg.Connection]:
        """The task's database connection (migrated, autocommit); closes it and the İYS hook on exit."""
        with iys_database(self.postgres_conn_id, log=self.log, also_close=self._close_hook) as conn:
            yield conn

    # OpenLineage calls these (only when its provider is installed and a transport configured); the
    # datasets are the ones the class declares, at the start and at the end of a run alike.
    def get_openlineage_facets_on_start(self) -> Any:
        return self._openlineage_facets()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._openlineage_facets()

    def _openlineage_facets(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        if self.lineage is None:
            return OperatorLineage()
        postgres = PostgresHook(postgres_conn_id=self.postgres_conn_id)
        # Host, port and database only: the namespace Airflow's SQL operators give the same database.
        database = postgres.get_openlineage_database_info(postgres.get_connection(self.postgres_conn_id))
        hook = self.iys_hook
        places = LineagePlaces(
            postgres_namespace=f"{database.scheme}://{database.authority}",
            database=database.database or "",
            iys_namespace=iys_namespace(hook.settings.base_url),
            iys_name=iys_dataset_name(hook.iys_code, hook.brand_code),
        )
        # The source query as the task ran it. OpenLineage builds its events in a forked process, which
        # may not reach Airflow's API to read the Variable that usually holds the query (under dag.test()
        # it cannot, and the event is lost): before the task has run (the START event) only an
        # operator's own recipients_sql names the user tables.
        query = self._lineage_source_sql or getattr(self, "recipients_sql", None)
        user_tables = source_tables(query) if self.lineage.user_source and query else []
        return operator_lineage(self.lineage, places, user_tables)

    def _close_hook(self) -> None:
        # Only a hook this task actually created; a later call (the next poke) reopens its session itself.
        if "iys_hook" in self.__dict__:
            self.iys_hook.close()


class WaitsOnTheTriggerer:
    """A sensor whose wait can run on the triggerer (``deferrable=True``): the İYS sensors' ``execute``.

    The worker looks once (``poke``): a wait already over ends there. Otherwise the task defers to
    :meth:`waiting_trigger`, whose looks are the poke's own service call, until ``timeout``; the
    sensor's ``execute_complete`` finishes on a worker. Not deferrable: the sensor's own
    reschedule/poke loop.
    """

    deferrable: bool
    timeout: float

    def waiting_trigger(self, context: Context) -> BaseTrigger:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)  # type: ignore[misc]
        looking_since = time.monotonic()
        first = self.poke(context)  # type: ignore[attr-defined]
        if first.is_done:
            return first.xcom_value
        # The sensor's timeout counts from its first look, as in reschedule mode: the deferral gets what is left.
        left = max(self.timeout - (time.monotonic() - looking_since), 0.0)
        self.defer(  # type: ignore[attr-defined]
            trigger=self.waiting_trigger(context),
            method_name="execute_complete",
            timeout=timedelta(seconds=left),
        )


class IysBaseOperator(IysConnections, BaseOperator):
    """Base of the İYS operators.

    :param iys_conn_id: the ``iys`` connection (API URL, credentials, İYS and brand codes).
        (templated)
    :param postgres_conn_id: the Postgres connection holding the ``iys`` schema and the users.
        (templated)
    :param hook_params: keyword arguments for :class:`~iys_provider.hooks.iys.IysHook`, e.g.
        ``{"max_attempts": 3, "max_retry_seconds": 60}`` or ``{"brand_code": 700002}``.
    :param retry_policy: Airflow's ``retry_policy``: :class:`IysRetryPolicy` unless given here or in
        the DAG's ``default_args`` (``None`` turns it off).
    """

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id")

    def __init__(
        self,
        *,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        retry_policy: RetryPolicy | None = IYS_RETRY_POLICY,
        **kwargs: Any,
    ) -> None:
        super().__init__(retry_policy=retry_policy, **kwargs)
        self._use_connections(iys_conn_id, postgres_conn_id, hook_params)


@contextmanager
def failing_without_retries() -> Iterator[None]:
    """A service's :class:`~iys_provider.exceptions.IysStepFailure` fails the task at once: a retry would repeat it."""
    try:
        yield
    except IysStepFailure as exc:
        raise AirflowFailException(str(exc)) from None
