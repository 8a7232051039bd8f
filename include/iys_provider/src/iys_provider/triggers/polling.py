"""What the package's deferrable waits share: one blocking look at a time in a worker thread, and errors
that reach the resumed task as the exceptions they were.

A look is the same service call a sensor's poke makes (the İYS hook and the database are
synchronous), run with :func:`asyncio.to_thread` so the triggerer's event loop never blocks. Its İYS
calls go through the shared token cache and rate limiter in PostgreSQL, exactly as from a worker,
and read their connections from that thread (Airflow 3.3's triggerer serves synchronous
connection reads from other threads). An error ends the wait with an event describing it; the
resumed task raises it again, so its retry policy decides as it would for a poke.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from iys_provider.database import iys_database
from iys_provider.exceptions import (
    IysApiError,
    IysAuthError,
    IysError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysStepFailure,
    IysSuccessRatioGuardError,
    IysTokenBlockedError,
)
from iys_provider.hooks.iys import IysHook

log = logging.getLogger(__name__)

_API_ERRORS: dict[str, type[IysApiError]] = {
    cls.__name__: cls for cls in (IysApiError, IysAuthError, IysMalformedResponseError, IysQuotaExceededError)
}


class IysPollingTrigger(BaseTrigger):
    """Looks every ``poke_interval`` seconds (the first one interval after the task's own look) until
    :meth:`look` says the wait is over.

    :param iys_conn_id: the brand's ``iys`` connection.
    :param postgres_conn_id: the database holding schema ``iys``.
    :param run_id: the DAG run the looks are recorded for.
    :param poke_interval: seconds between looks.
    :param hook_params: keyword arguments of :class:`~iys_provider.hooks.iys.IysHook`.
    """

    def __init__(
        self,
        *,
        iys_conn_id: str,
        postgres_conn_id: str,
        run_id: str,
        poke_interval: float,
        hook_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.run_id = run_id
        self.poke_interval = float(poke_interval)
        self.hook_params = dict(hook_params or {})

    @abstractmethod
    def look(self) -> dict[str, Any] | None:
        """One blocking look (runs in a worker thread): the event's payload when the wait is over, else None."""

    def wait_arguments(self) -> dict[str, Any]:
        """The subclass's own constructor arguments (besides the connections, run and interval)."""
        return {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "iys_conn_id": self.iys_conn_id,
                "postgres_conn_id": self.postgres_conn_id,
                "run_id": self.run_id,
                "poke_interval": self.poke_interval,
                "hook_params": self.hook_params,
                **self.wait_arguments(),
            },
        )

    @contextmanager
    def connections(self) -> Iterator[tuple[IysHook, psycopg.Connection]]:
        """A fresh İYS hook (the shared token and limiter) and database connection for one look, closed after."""
        hook = IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)
        with iys_database(self.postgres_conn_id, log=log, also_close=hook.close) as conn:
            yield hook, conn

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            # The task has just looked on its worker (or an earlier look found İYS not done): one interval first.
            await asyncio.sleep(self.poke_interval)
            try:
                payload = await asyncio.to_thread(self.look)
            except Exception as exc:
                log.warning("The wait ends with %s: %s", type(exc).__name__, exc)
                yield TriggerEvent({"status": "error", "error": error_payload(exc)})
                return
            if payload is not None:
                yield TriggerEvent({"status": "done", **payload})
                return


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The error as a small JSON-able dict (İYS errors never carry recipients, see :mod:`iys_provider.exceptions`)."""
    payload: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, IysApiError):
        payload |= {
            "message": exc.iys_message,
            "status_code": exc.status_code,
            "code": exc.code,
            "endpoint": exc.endpoint,
            "retry_after": exc.retry_after,
        }
    elif isinstance(exc, IysTokenBlockedError):
        payload["blocked_until"] = exc.blocked_until.isoformat() if exc.blocked_until else None
    elif isinstance(exc, IysSuccessRatioGuardError):
        payload |= {"endpoint": exc.endpoint, "ratio": exc.ratio}
    return payload


def error_from_payload(payload: dict[str, Any]) -> Exception:
    """The exception :func:`error_payload` described; anything not İYS's is an ``AirflowException``."""
    kind, message = payload.get("type"), str(payload.get("message", ""))
    if kind in _API_ERRORS:
        return _API_ERRORS[kind](
            message,
            status_code=payload.get("status_code"),
            code=payload.get("code"),
            endpoint=payload.get("endpoint"),
            retry_after=payload.get("retry_after"),
        )
    if kind == IysTokenBlockedError.__name__:
        until = payload.get("blocked_until")
        return IysTokenBlockedError(message, blocked_until=datetime.fromisoformat(until) if until else None)
    if kind == IysSuccessRatioGuardError.__name__:
        return IysSuccessRatioGuardError(message, endpoint=str(payload.get("endpoint")), ratio=payload.get("ratio"))
    if kind == IysStepFailure.__name__:
        return IysStepFailure(message)
    if kind == IysError.__name__:
        return IysError(message)
    return AirflowException(f"{kind}: {message}")


def raise_trigger_error(event: dict[str, Any]) -> None:
    """Raise the error a trigger's event carries, if it carries one."""
    if event.get("status") == "error":
        raise error_from_payload(event.get("error") or {})
