"""People, helpers and steps shared by the incremental-sync and opt-out tests (simulator + Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from iys_provider.operators.changes import IysPullChangesOperator
from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
from tests_support import SIM_BRAND_CODE, sim_control

ALICE, BOB, CAROL, DAVE = "+905321110001", "+905321110002", "+905321110003", "+905321110004"
USERS_SQL = "SELECT id AS user_id, phone, email FROM public.users"
OLD = "2024-03-01 10:00:00"


def iys_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def turkey_text(value: datetime) -> str:
    """İYS's ``YYYY-MM-DD HH:mm:ss`` Turkey-time spelling of ``value``."""
    from iys_provider.models import format_iys_datetime

    return format_iys_datetime(value)


def consent(pg, recipient, type_="MESAJ"):
    return pg.execute(
        "SELECT status, source, transaction_id FROM iys.consents WHERE recipient = %s AND type = %s",
        (recipient, type_),
    ).fetchone()


def make_feed_visible(sim):
    """İYS withholds the last hour of movements; move its clock past that hour."""
    sim_control(sim, "clock", {"advance_seconds": 3700})


def pull(stream: str, **kwargs):
    return IysPullChangesOperator(task_id=f"pull_{stream}", stream=stream, **kwargs).execute(context={})


def add_update(
    pg,
    recipient,
    status,
    *,
    type_="MESAJ",
    when=None,
    source="HS_MOBIL",
    recipient_type="BIREYSEL",
    brand_code=SIM_BRAND_CODE,
):
    return pg.execute(
        "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (brand_code, recipient, type_, recipient_type, status, when or iys_now() - timedelta(minutes=2), source),
    ).fetchone()[0]


def outbox(pg, row_id):
    return pg.execute(
        "SELECT state, error_code, transaction_id, attempts FROM iys.consent_updates WHERE id = %s", (row_id,)
    ).fetchone()


def push(**kwargs):
    return IysPushConsentUpdatesOperator(task_id="push", **kwargs).execute(context={})


def truth(sim, recipient, type_="MESAJ"):
    return sim_control(sim, f"truth?recipient={recipient.replace('+', '%2B')}&type={type_}", method="GET")["status"]


def counters(sim):
    return sim_control(sim, "counters", method="GET")


def seed(sim, *items):
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {"recipient": r, "type": t, "status": s, "consentDate": OLD, "source": "HS_WEB"} for r, t, s in items
            ]
        },
    )
