"""Wait for İYS's hash of one day (the reconciliation's hash job), without holding a worker slot."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from iys_provider.exceptions import IysApiError
from iys_provider.hooks.iys import IysHook
from iys_provider.operators.base import (
    DEFAULT_POSTGRES_CONN_ID,
    IYS_RETRY_POLICY,
    IysConnections,
    failing_without_retries,
)
from iys_provider.reconciliation.day import ensure_in_window, parse_report_date
from iys_provider.reconciliation.rules import (
    DEFAULT_MAX_WAIT,
    SETTLED,
    DayStatus,
    HashJobVerdict,
    describe_hash_method,
    hash_job_verdict,
    summary_total,
    waiting_reason,
)
from iys_provider.reconciliation.store import read_reconciliation, save_reconciliation
from iys_provider.templating import TemplatedValueError, as_float


class IysReconciliationHashSensor(IysConnections, BaseSensorOperator):
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

    Reschedule mode by default: no worker slot is held between pokes.

    :param report_date: the day, ``YYYY-MM-DD``. (templated)
    :param max_wait_minutes: how long a day's unfinished hash job is waited for. (templated)
    :param clock: the current time (aware), for tests; default the system clock.
    :param retry_policy: :class:`~iys_provider.operators.base.IysRetryPolicy` unless given here or in the
        DAG's ``default_args`` (``None`` turns it off).
    """

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
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, retry_policy=retry_policy, **kwargs)
        self._use_connections(iys_conn_id, postgres_conn_id, hook_params)
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
        with failing_without_retries():
            day = parse_report_date(self.report_date)
            ensure_in_window(day)
        max_wait = self._max_wait()
        run_id = str(context.get("run_id") or self._run_id_outside_a_run)
        with self.database() as conn:
            brand_code = self.iys_hook.brand_code
            row = read_reconciliation(conn, brand_code, day) or {}
            if row.get("status") in SETTLED and row.get("hash_iys"):
                return PokeReturnValue(is_done=True, xcom_value={"report_date": day.isoformat(), "process": "agreed"})
            try:
                info = self.iys_hook.get_agreement(day)
            except IysApiError as exc:
                if exc.status_code in (400, 403, 404, 422):
                    # A refusal will not change by asking again (and each one costs success ratio).
                    save_reconciliation(conn, brand_code, day, run_id=run_id, detail=f"İYS refused: {exc}"[:500])
                    raise AirflowFailException(f"{day}: İYS refused the hash query: {exc}") from None
                raise
            now = self.clock() if self.clock else datetime.now(UTC)
            values: dict[str, Any] = {"run_id": run_id}
            status = None if info is None else info.process_status.strip().lower()
            queued_since = row.get("hash_queued_since")
            if status == "queued":
                if queued_since is None:
                    values["hash_queued_since"] = now
            elif queued_since is not None:
                values["hash_queued_since"] = None
            day_is_empty = (
                row.get("summary_ours") is not None
                and row.get("summary_iys") is not None
                and not summary_total(row["summary_ours"])
                and not summary_total(row["summary_iys"])
            )
            finished = status in ("completed", "error") and (status == "error" or bool(info and info.hash_value))
            waiting_since = row.get("hash_waiting_since")
            if finished or (info is None and day_is_empty):
                if waiting_since is not None:
                    values["hash_waiting_since"] = None
            elif waiting_since is None:
                waiting_since = values["hash_waiting_since"] = now
            verdict = hash_job_verdict(
                info,
                waited_for=None if waiting_since is None else now - waiting_since,
                max_wait=max_wait,
                day_is_empty=day_is_empty,
            )
            values["process_status"] = ("no_movements" if day_is_empty else "no_value") if info is None else status
            if verdict is HashJobVerdict.COMPLETED:
                assert info is not None and info.hash_value
                values["hash_iys"] = info.hash_value.strip().lower()
                values["hash_method"] = describe_hash_method(info.hash_method, info.hash_value)
            elif verdict is HashJobVerdict.ERROR:
                values["status"] = DayStatus.HASH_ERROR.value
                values["detail"] = "İYS's hash job ended in error"
            elif verdict is HashJobVerdict.TOO_LONG:
                assert waiting_since is not None
                if row.get("status") not in SETTLED:
                    values["status"] = DayStatus.PENDING.value
                values["hash_iys"] = None
                since = (queued_since or now) if status == "queued" else waiting_since
                values["detail"] = waiting_reason(values["process_status"], since, max_wait)
            save_reconciliation(conn, brand_code, day, **values)
        if verdict is HashJobVerdict.ERROR:
            raise AirflowFailException(f"{day}: {values['detail']}")
        if verdict is HashJobVerdict.TOO_LONG:
            self.log.warning("%s: %s", day, values["detail"])
            raise AirflowSkipException(f"{day}: {values['detail']}")
        if verdict is HashJobVerdict.WAIT:
            self.log.info("%s: İYS's hash job is %s; waiting", day, values["process_status"])
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value={"report_date": day.isoformat(), "process": verdict.value})
