"""Wait for İYS's hash of one day (the reconciliation's hash job), without holding a worker slot."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from iys_provider.hooks.iys import IysHook
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import (
    DEFAULT_POSTGRES_CONN_ID,
    IYS_RETRY_POLICY,
    IysConnections,
    WaitsOnTheTriggerer,
    failing_without_retries,
)
from iys_provider.reconciliation.day import ensure_in_window, parse_report_date
from iys_provider.reconciliation.hash_wait import HashLook, look_at_hash_job
from iys_provider.reconciliation.rules import DEFAULT_MAX_WAIT, HashJobVerdict
from iys_provider.templating import TemplatedValueError, as_float
from iys_provider.triggers.polling import raise_trigger_error
from iys_provider.triggers.reconciliation_hash import IysReconciliationHashTrigger


class IysReconciliationHashSensor(WaitsOnTheTriggerer, IysConnections, BaseSensorOperator):
    """Poke ``GET …/agreements/{reportDate}`` until İYS's hash of the day is ``completed``.

    The first call starts İYS's job (``queued`` → ``inprogress`` → ``completed``). What each answer
    means is :func:`~iys_provider.reconciliation.rules.hash_job_verdict`: on ``completed`` the hash and
    its method are recorded in ``iys.reconciliations`` for the next task; on ``error`` the day is
    recorded as ``hash_error`` and this task fails at once, without retries, while the other days
    go on. A job still unfinished ``max_wait_minutes`` after this run first saw it so (İYS: a job
    whose queueing failed stays ``queued`` for ever) leaves the day ``pending`` with the reason
    and skips the day's reconcile task: the night goes on without it, and the next run asks again
    (the plan task starts each run's wait afresh). The times are kept in the database, so
    reschedules and retries measure from them. A 204 while neither side counts a movement that
    day ends the wait too (nothing to agree on).

    Reschedule mode by default: no worker slot is held between pokes. With ``deferrable=True`` the
    worker looks once, then the wait runs as :class:`~iys_provider.triggers.reconciliation_hash.IysReconciliationHashTrigger`
    on the triggerer (which then calls İYS, from its own IP), every ``poke_interval``; the same
    service records each look, so both modes measure the same wait and end the same way.

    :param report_date: the day, ``YYYY-MM-DD``. (templated)
    :param max_wait_minutes: how long a day's unfinished hash job is waited for. (templated)
    :param clock: the current time (aware), for tests; default the system clock (the trigger's is always
        the system clock).
    :param deferrable: wait on the triggerer instead of rescheduling the task between looks.
    :param retry_policy: :class:`~iys_provider.operators.base.IysRetryPolicy` unless given here or in the
        DAG's ``default_args`` (``None`` turns it off).
    """

    lineage = TaskLineage(reads=("reconciliations",), writes=("reconciliations",))

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id", "report_date", "max_wait_minutes")

    def __init__(
        self,
        *,
        report_date: str,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        mode: str = "reschedule",
        poke_interval: float = 60,
        timeout: float = 6 * 3600,
        max_wait_minutes: float | str = DEFAULT_MAX_WAIT.total_seconds() / 60,
        hook_params: dict[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        retry_policy: RetryPolicy | None = IYS_RETRY_POLICY,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, retry_policy=retry_policy, **kwargs)
        self._use_connections(iys_conn_id, postgres_conn_id, hook_params)
        self.deferrable = deferrable
        self.report_date = report_date
        self.max_wait_minutes = max_wait_minutes
        self.clock = clock
        self._run_id_outside_a_run = f"adhoc-{uuid.uuid4()}"

    def _max_wait(self) -> timedelta:
        try:
            minutes = as_float(self.max_wait_minutes, "max_wait_minutes")
        except TemplatedValueError as exc:
            raise AirflowFailException(str(exc)) from None
        if minutes < 0:
            raise AirflowFailException(f"max_wait_minutes must not be negative ({minutes})")
        return timedelta(minutes=minutes)

    def poke(self, context: Context) -> PokeReturnValue:
        day, max_wait = self._day_and_max_wait()
        with self.database() as conn, failing_without_retries():
            look = look_at_hash_job(
                self.iys_hook, conn, day, run_id=self._run_id(context), max_wait=max_wait, now=self._now()
            )
        return self._outcome(look)

    def waiting_trigger(self, context: Context) -> IysReconciliationHashTrigger:
        day, max_wait = self._day_and_max_wait()
        return IysReconciliationHashTrigger(
            iys_conn_id=self.iys_conn_id,
            postgres_conn_id=self.postgres_conn_id,
            hook_params=self.hook_params,
            report_date=day.isoformat(),
            max_wait_seconds=max_wait.total_seconds(),
            run_id=self._run_id(context),
            poke_interval=self.poke_interval,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resumes a deferred wait: the trigger's last look decides, as a poke's would."""
        with failing_without_retries():
            raise_trigger_error(event)
        return self._outcome(HashLook.from_event(event["look"])).xcom_value

    def _outcome(self, look: HashLook) -> PokeReturnValue:
        day = look.day
        if look.verdict is HashJobVerdict.ERROR:
            raise AirflowFailException(f"{day}: {look.detail}")
        if look.verdict is HashJobVerdict.TOO_LONG:
            self.log.warning("%s: %s", day, look.detail)
            raise AirflowSkipException(f"{day}: {look.detail}")
        if look.verdict is HashJobVerdict.WAIT:
            self.log.info("%s: İYS's hash job is %s; waiting", day, look.process_status)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value={"report_date": day.isoformat(), "process": look.outcome})

    def _day_and_max_wait(self) -> tuple[date, timedelta]:
        with failing_without_retries():
            day = parse_report_date(self.report_date)
            ensure_in_window(day)
        return day, self._max_wait()

    def _run_id(self, context: Context) -> str:
        return str(context.get("run_id") or self._run_id_outside_a_run)

    def _now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)
