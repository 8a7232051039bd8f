"""Issue #13: several İYS accounts on one installation share what İYS counts per client IP.

İYS applies the token-request budget, the one-hour H084 block (restarted by any token call made
during it, whichever account makes it) and the 10 requests per second per client IP. The hook
keeps the token per account, and the budget, the block and the request rate per budget key: the
API host plus the ``egress_ip`` label. Two accounts run against one simulator (which also keeps
its limits per IP across accounts) with the shared state in real Postgres.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest

from iys_provider.exceptions import IysTokenBlockedError
from iys_provider.hooks import base
from iys_provider.hooks.iys import IysHook
from iys_provider.limits.shared_state import InProcessSharedState, PostgresSharedState
from iys_provider.models import Consent, ConsentSource, ConsentStatus, ConsentType
from iys_provider.schema import migrate
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE, SIM_USERNAME, iys_connection_json_with, sim_control

SECOND_BRAND = 700002  # a second brand of the main account
OTHER_USERNAME = "iys-other-user"  # a single-brand account of another service provider
OTHER_PASSWORD = "other-iys-password"
OTHER_IYS_CODE = 800001
PHONE = "+905321234567"
ROUNDS = 6


def connection(sim, *, username: str = SIM_USERNAME, password: str | None = None, **extra) -> str:
    conn = json.loads(iys_connection_json_with(sim.url, **extra))
    conn["login"] = username
    if password:
        conn["password"] = password
    return json.dumps(conn)


def other_account(sim, **extra) -> str:
    extra = {"iys_code": OTHER_IYS_CODE, "brand_code": OTHER_IYS_CODE, **extra}
    return connection(sim, username=OTHER_USERNAME, password=OTHER_PASSWORD, **extra)


@pytest.fixture(autouse=True)
def no_ip_block_left(pg_dsn):
    """The session's shared state outlives a test; an IP block must not reach the next one."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("DELETE FROM iys.ip_blocks")
    yield
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM iys.ip_blocks")


@pytest.fixture
def accounts(sim, monkeypatch):
    """The simulator serves the main account (brands 700001, 700002) and a single-brand one.

    Connections: ``iys_default`` (main account, brand 700001), ``iys_second_brand`` (main account,
    brand 700002) and ``iys_other`` (the other account).
    """
    sim_control(
        sim,
        "config",
        {
            "brand_codes": [SIM_BRAND_CODE, SECOND_BRAND],
            "extra_accounts": [{"username": OTHER_USERNAME, "password": OTHER_PASSWORD, "iys_code": OTHER_IYS_CODE}],
        },
    )
    monkeypatch.setenv("AIRFLOW_CONN_IYS_SECOND_BRAND", connection(sim, brand_code=SECOND_BRAND))
    monkeypatch.setenv("AIRFLOW_CONN_IYS_OTHER", other_account(sim))
    return sim


def counters(sim) -> dict:
    return sim_control(sim, "counters", method="GET")


def token_calls_by_user(sim) -> dict[str, int]:
    return counters(sim)["token_requests_by_username"]


def host(sim) -> str:
    return urlsplit(sim.url).netloc


def fresh_processes() -> None:
    """As if each later hook ran in a new task process: nothing cached in memory."""
    base._process_tokens.clear()


# --------------------------------------------------------------------------- the H084 block is the IP's


def test_another_account_makes_no_token_call_while_the_ip_is_blocked(accounts, pg):
    sim = accounts
    sim_control(sim, "config", {"token_limit_per_hour": 1})
    IysHook().get_brands()  # the IP's one token request of the hour
    sim_control(sim, "revoke_tokens", {"refresh": True})
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook().get_brands()  # 401, then a refresh grant: İYS answers H084
    assert token_calls_by_user(sim) == {SIM_USERNAME: 2}

    # The other account, in other task processes, with and without the brand override: no call.
    for brand_code in (None, OTHER_IYS_CODE):
        fresh_processes()
        with pytest.raises(IysTokenBlockedError, match="(?i)no token call is made until") as excinfo:
            IysHook("iys_other", brand_code=brand_code).get_brands()
        assert token_calls_by_user(sim) == {SIM_USERNAME: 2}
        assert "by any İYS account on this IP" in str(excinfo.value)

    # Recorded once, for the IP, on the database clock; not on the accounts' token rows.
    ((budget_key, blocked_until, reason),) = pg.execute(
        "SELECT budget_key, blocked_until, block_reason FROM iys.ip_blocks"
    ).fetchall()
    assert budget_key == host(sim) and "H084" in reason
    assert blocked_until - datetime.now(UTC) > timedelta(minutes=59)
    assert excinfo.value.blocked_until == blocked_until
    assert pg.execute("SELECT count(*) FROM iys.api_tokens WHERE blocked_until IS NOT NULL").fetchone() == (0,)

    # The hour passes on both sides: the other account gets its token with one call.
    sim_control(sim, "clock", {"advance_seconds": 3601})
    pg.execute("UPDATE iys.ip_blocks SET blocked_until = now() - interval '1 second'")
    assert [b.brand_code for b in IysHook("iys_other").get_brands()] == [OTHER_IYS_CODE]
    assert token_calls_by_user(sim) == {SIM_USERNAME: 2, OTHER_USERNAME: 1}


def test_an_account_with_a_valid_token_keeps_working_during_the_block(accounts, pg):
    """The block stops token calls only: İYS keeps serving tokens it already issued."""
    sim = accounts
    IysHook("iys_other").get_brands()
    sim_control(
        sim, "faults", {"fail_next": [{"path_contains": "/oauth2/token", "status": 429, "code": "H084", "count": 1}]}
    )
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook().get_brands()
    fresh_processes()
    assert IysHook("iys_other").get_onay_recipients([PHONE], ConsentType.MESAJ) == set()
    assert token_calls_by_user(sim) == {OTHER_USERNAME: 1, SIM_USERNAME: 1}


def test_a_block_recorded_on_an_account_by_an_earlier_version_is_still_honoured(accounts, pg):
    sim = accounts
    IysHook().get_brands()
    pg.execute("UPDATE iys.api_tokens SET access_token = NULL, blocked_until = now() + interval '1 hour'")
    fresh_processes()
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook().get_brands()
    assert token_calls_by_user(sim) == {SIM_USERNAME: 1}


def test_the_upgrade_carries_a_live_account_block_over_to_its_ip(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    try:
        migrate(pg, up_to=8)
        pg.execute(
            "INSERT INTO iys.api_tokens (account_key, blocked_until, block_reason) VALUES "
            "('blocked', now() + interval '40 minutes', 'H084 at noon'), ('over', now() - interval '1 minute', 'old')"
        )
        pg.execute(
            "INSERT INTO iys.token_requests (budget_key, account_key, grant_type) VALUES "
            "('api.iys.org.tr', 'blocked', 'password'), ('api.iys.org.tr', 'blocked', 'refresh_token'), "
            "('other.host', 'over', 'password')"
        )
        assert 9 in migrate(pg)
        rows = pg.execute("SELECT budget_key, block_reason, blocked_until > now() FROM iys.ip_blocks").fetchall()
        assert rows == [("api.iys.org.tr", "H084 at noon", True)]
    finally:
        pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
        migrate(pg)


# --------------------------------------------------------------------------- the hourly budget is the IP's


def test_the_hourly_token_cap_is_shared_by_both_accounts(accounts, pg, monkeypatch):
    sim = accounts
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", connection(sim, auth_requests_per_hour=2))
    monkeypatch.setenv("AIRFLOW_CONN_IYS_OTHER", other_account(sim, auth_requests_per_hour=2))
    IysHook().get_brands()
    IysHook("iys_other").get_brands()
    sim_control(sim, "revoke_tokens", {"refresh": True})
    for conn_id in ("iys_default", "iys_other"):
        with pytest.raises(IysTokenBlockedError, match=f"from {re.escape(host(sim))} already reached the .* of 2"):
            IysHook(conn_id).get_brands()
    assert token_calls_by_user(sim) == {SIM_USERNAME: 1, OTHER_USERNAME: 1}
    rows = pg.execute("SELECT budget_key, count(DISTINCT account_key) FROM iys.token_requests GROUP BY 1").fetchall()
    assert rows == [(host(sim), 2)]


def _race(conn_ids: list[str]) -> list[str]:
    """Each connection's hook asks for İYS's brands at the same moment, in its own thread and
    Postgres session; returns what each got."""
    hooks = [IysHook(conn_id) for conn_id in conn_ids]
    for hook in hooks:
        hook.shared_state.conn  # noqa: B018 - connected before the start, so the threads start together
    start = threading.Barrier(len(hooks))
    outcomes: list[str] = [""] * len(hooks)

    def run(i: int) -> None:
        start.wait()
        try:
            hooks[i].get_brands()
            outcomes[i] = "ok"
        except IysTokenBlockedError:
            outcomes[i] = "over budget"
        except Exception as exc:  # reported through the outcome, asserted by the caller
            outcomes[i] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(hooks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for hook in hooks:
        hook.close()
    return outcomes


def test_concurrent_refreshes_of_two_accounts_never_exceed_the_cap(accounts, pg, monkeypatch):
    """Cap 1, both accounts without a token, three workers each, all at once: one token call.

    Repeated, because an unguarded check-then-insert only overspends when the two accounts'
    checks interleave, which one round need not show.
    """
    sim = accounts
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", connection(sim, auth_requests_per_hour=1))
    monkeypatch.setenv("AIRFLOW_CONN_IYS_OTHER", other_account(sim, auth_requests_per_hour=1))
    for round_no in range(ROUNDS):
        pg.execute("TRUNCATE iys.token_requests, iys.api_tokens")
        fresh_processes()
        sim_control(sim, "counters/reset")
        outcomes = _race(["iys_default", "iys_other"] * 3)
        assert counters(sim)["token_requests"] == 1, (round_no, outcomes)
        assert pg.execute("SELECT count(*) FROM iys.token_requests").fetchone() == (1,)
        # The winner's three workers share its token; the other account's three stay within the cap.
        by_account = {frozenset(outcomes[0::2]), frozenset(outcomes[1::2])}
        assert by_account == {frozenset({"ok"}), frozenset({"over budget"})}, (round_no, outcomes)


@pytest.mark.parametrize("state_kind", ["postgres", "in-process"])
def test_token_reservations_are_atomic_per_budget_key(pg_dsn, state_kind):
    """Twelve workers of two accounts reserve at once against a limit of four: exactly four win."""
    workers, limit = 12, 4
    for _ in range(3):
        key = f"race-{uuid.uuid4().hex}"
        states = [
            PostgresSharedState(lambda: psycopg.connect(pg_dsn)) if state_kind == "postgres" else InProcessSharedState()
            for _ in range(workers)
        ]
        for state in states:
            state.token_requests_since(key, timedelta(hours=1))  # connected and migrated before the start
        start = threading.Barrier(workers)
        granted: list[bool] = [False] * workers

        def reserve(i: int, key: str = key, states=states, start=start, granted=granted) -> None:
            start.wait()
            reservation = states[i].reserve_token_request(
                key, f"account-{i % 2}", "password", limit=limit, window=timedelta(hours=1)
            )
            granted[i] = reservation.granted

        threads = [threading.Thread(target=reserve, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sum(granted) == limit
        assert states[0].token_requests_since(key, timedelta(hours=1))[0] == limit
        refused = states[0].reserve_token_request(key, "account-0", "password", limit=limit, window=timedelta(hours=1))
        assert (refused.granted, refused.used, refused.block) == (False, limit, None)
        assert refused.frees_at > datetime.now(UTC) + timedelta(minutes=59)
        for state in states:
            state.close()


@pytest.mark.parametrize("state_kind", ["postgres", "in-process"])
def test_a_blocked_ip_reserves_nothing_and_a_longer_block_stays(pg_dsn, state_kind):
    state = PostgresSharedState(lambda: psycopg.connect(pg_dsn)) if state_kind == "postgres" else InProcessSharedState()
    key, other = f"blocked-{uuid.uuid4().hex}", f"free-{uuid.uuid4().hex}"
    try:
        assert state.ip_block(key) is None
        long_block = state.block_ip(key, 3600, "H084 first")
        assert state.block_ip(key, 60, "H084 later, shorter") == long_block  # never shortened
        assert state.ip_block(key) == long_block and state.ip_block(other) is None
        reservation = state.reserve_token_request(key, "a", "password", limit=10, window=timedelta(hours=1))
        assert (reservation.granted, reservation.block) == (False, long_block)
        assert state.token_requests_since(key, timedelta(hours=1))[0] == 0  # the refusal is not logged
        assert state.reserve_token_request(other, "a", "password", limit=10, window=timedelta(hours=1)).granted
        assert state.block_ip(key, 7200, "H084 again").reason == "H084 again"  # a longer one replaces it
    finally:
        state.close()


# --------------------------------------------------------------------------- egress labels


def test_two_egress_labels_get_separate_budgets_blocks_and_rates(accounts, pg, monkeypatch):
    sim = accounts
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", connection(sim, egress_ip="nat-a", auth_requests_per_hour=1))
    monkeypatch.setenv("AIRFLOW_CONN_IYS_OTHER", other_account(sim, egress_ip="nat-b", auth_requests_per_hour=1))
    monkeypatch.setenv("AIRFLOW_CONN_IYS_OTHER_ON_A", other_account(sim, egress_ip="NAT-A", auth_requests_per_hour=1))
    IysHook().get_brands()  # nat-a's one token request
    IysHook("iys_other").get_brands()  # nat-b has a budget of its own
    fresh_processes()
    sim_control(sim, "revoke_tokens", {"refresh": True})
    with pytest.raises(IysTokenBlockedError, match="configured limit of 1"):
        IysHook("iys_other_on_a").get_brands()  # the other account, leaving through nat-a: spent
    assert token_calls_by_user(sim) == {SIM_USERNAME: 1, OTHER_USERNAME: 1}

    # An H084 on nat-b blocks nat-b only (a fresh hour, no token anywhere: one password grant each).
    pg.execute("TRUNCATE iys.token_requests, iys.api_tokens")
    fresh_processes()
    sim_control(
        sim, "faults", {"fail_next": [{"path_contains": "/oauth2/token", "status": 429, "code": "H084", "count": 1}]}
    )
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook("iys_other").get_brands()
    with pytest.raises(IysTokenBlockedError, match="(?i)no token call"):
        IysHook("iys_other").get_brands()
    hook = IysHook("iys_other_on_a")
    assert hook.get_brands()
    hook.close()

    a, b = f"{host(sim)}|nat-a", f"{host(sim)}|nat-b"
    assert pg.execute("SELECT budget_key FROM iys.ip_blocks").fetchall() == [(b,)]
    assert dict(pg.execute("SELECT budget_key, count(*) FROM iys.token_requests GROUP BY 1").fetchall()) == {a: 1, b: 1}
    assert {row[0] for row in pg.execute("SELECT limiter_key FROM iys.rate_limiter")} == {a, b}
    assert {row[0] for row in pg.execute("SELECT DISTINCT budget_key FROM iys.api_responses")} >= {a}


def test_both_accounts_share_one_request_rate(accounts, pg):
    """At 8 requests per second each, two accounts apart would send 16 to İYS's 10: shared, they send 8."""
    sim = accounts
    sim_control(sim, "config", {"rate_limit_per_second": 10})
    IysHook().get_brands()
    IysHook("iys_other").get_brands()
    start = threading.Barrier(2)
    failures: list[str] = []

    def many_calls(conn_id: str) -> None:
        hook = IysHook(conn_id)
        try:
            start.wait()
            for _ in range(16):
                hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
            if hook.stats.rate_limited:
                failures.append(f"{conn_id}: {hook.stats.rate_limited} answers 429")
        except Exception as exc:  # collected and asserted below
            failures.append(f"{conn_id}: {exc!r}")
        finally:
            hook.close()

    threads = [threading.Thread(target=many_calls, args=(conn_id,)) for conn_id in ("iys_default", "iys_other")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert counters(sim)["h124"] == 0 and counters(sim)["multi_status_calls"] == 32
    assert pg.execute("SELECT limiter_key FROM iys.rate_limiter").fetchall() == [(host(sim),)]


# --------------------------------------------------------------------------- one account, several brands


def test_two_brands_of_one_account_share_one_token(accounts, pg):
    sim = accounts
    first = IysHook()
    first.add_consent(_consent())
    fresh_processes()  # the second brand's task runs in another process: the token comes from Postgres
    second = IysHook("iys_second_brand")
    second.add_consent(_consent())
    IysHook(brand_code=SECOND_BRAND).get_onay_recipients([PHONE], ConsentType.MESAJ)
    assert (first.brand_code, second.brand_code) == (SIM_BRAND_CODE, SECOND_BRAND)
    assert first.settings.account_key == second.settings.account_key
    assert counters(sim)["tokens_issued"] == 1 and token_calls_by_user(sim) == {SIM_USERNAME: 1}
    assert pg.execute("SELECT count(*) FROM iys.api_tokens").fetchone() == (1,)
    assert [sim.truth(PHONE, "MESAJ", brand_code=brand) for brand in (SIM_BRAND_CODE, SECOND_BRAND)] == ["ONAY"] * 2
    assert SIM_IYS_CODE == first.iys_code == second.iys_code


def _consent() -> Consent:
    from iys_provider.models import IYS_TIMEZONE

    return Consent(
        recipient=PHONE,
        type=ConsentType.MESAJ,
        status=ConsentStatus.ONAY,
        source=ConsentSource.HS_WEB,
        consent_date=datetime.now(IYS_TIMEZONE).replace(microsecond=0) - timedelta(minutes=5),
    )


def test_the_other_account_cannot_write_to_the_main_accounts_brand(accounts):
    """A connection pointing one account's login at another's codes fails at İYS (403 H353), not silently."""
    from iys_provider.exceptions import IysApiError

    sim = accounts
    with pytest.raises(IysApiError) as excinfo:
        IysHook("iys_other", brand_code=SIM_BRAND_CODE).get_onay_recipients([PHONE], ConsentType.MESAJ)
    assert (excinfo.value.status_code, excinfo.value.code) == (403, "H353")
    assert counters(sim)["multi_status_calls"] == 1  # a refusal, not retried
