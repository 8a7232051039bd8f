"""Issue #12 (3): İYS's success-ratio rule, recorded per API host and hour, and the guard before avoidable failures."""

from __future__ import annotations

import pytest

from iys_provider.exceptions import IysApiError, IysSuccessRatioGuardError
from iys_provider.hooks.iys import IysHook
from iys_provider.limits.success_ratio_store import success_ratio_24h
from iys_provider.models import Consent, ConsentSource, ConsentStatus, ConsentType
from tests_support import iys_connection_json_with, sim_control

PHONE = "+905321234567"


@pytest.fixture
def ledger(sim, pg):
    """An empty ledger; returns the simulator's budget key (its host:port)."""
    pg.execute("TRUNCATE iys.api_responses")
    return sim.url.split("://", 1)[1]


def fail_next(sim, path_contains: str, status: int, count: int, code: str = "H000") -> None:
    rule = {"path_contains": path_contains, "status": status, "code": code, "count": count}
    sim_control(sim, "faults", {"fail_next": [rule]})


def ledger_rows(pg, budget_key: str) -> dict[int, tuple[str, int]]:
    rows = pg.execute(
        "SELECT status, response_class, sum(responses) FROM iys.api_responses WHERE budget_key = %s "
        "GROUP BY status, response_class",
        (budget_key,),
    )
    return {status: (response_class, n) for status, response_class, n in rows}


def write(recipient: str = PHONE) -> Consent:
    return Consent(recipient=recipient, type=ConsentType.MESAJ, status=ConsentStatus.ONAY, source=ConsentSource.HS_WEB)


def test_every_answer_is_recorded_by_class_and_the_ratio_follows_iys(sim, pg, ledger):
    hook = IysHook()
    for _ in range(6):
        hook.get_brands()
    fail_next(sim, "/consents/status", 404, 3)
    for _ in range(3):
        assert hook.get_consent_status("+905321110001", ConsentType.MESAJ) is None  # 404: "not in İYS"
    fail_next(sim, "/consents", 422, 2)
    for _ in range(2):
        with pytest.raises(IysApiError, match="HTTP 422"):
            hook.add_consent(write())
    fail_next(sim, "/brands", 503, 1, code="H192")
    hook.get_brands()  # 503, retried: 200
    fail_next(sim, "/brands", 429, 1, code="H124")
    hook.get_brands()  # 429, retried: 200
    hook.close()  # flushes the answers counted in memory

    rows = ledger_rows(pg, ledger)
    assert rows == {
        200: ("success", 1 + 6 + 2),  # token, six brands, the two retried ones
        404: ("client_error", 3),
        422: ("client_error", 2),
        429: ("rate_limited", 1),
        503: ("server_error", 1),
    }
    # The ledger holds exactly what the simulator answered.
    answered = sim_control(sim, "counters", method="GET")["responses_by_status"]
    assert {str(status): n for status, (_, n) in rows.items()} == answered

    reading = success_ratio_24h(pg, ledger)
    assert (reading.calls, reading.successes, reading.client_errors) == (16, 9, 5)
    assert reading.ratio == pytest.approx(9 / 14)  # 429 and 503 are not failures by İYS's rule
    assert reading.client_errors_text() == "404×3, 422×2"


def test_the_control_api_and_requests_without_a_hook_are_not_recorded(sim, pg, ledger):
    for _ in range(2):
        hook = IysHook()
        hook.get_brands()
        hook.close()
    before = ledger_rows(pg, ledger)
    for path, payload, method in [
        ("counters", None, "GET"),
        ("config", None, "GET"),
        ("clock", None, "GET"),
        ("faults", {"fail_next": []}, "POST"),
        ("counters/reset", {}, "POST"),
        ("seed", {"consents": []}, "POST"),
    ]:
        sim_control(sim, path, payload, method=method)
    IysHook().close()
    assert ledger_rows(pg, ledger) == before == {200: ("success", 3)}


def test_the_guard_stops_avoidable_failures_and_names_the_cause(sim, pg, ledger, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT",
        iys_connection_json_with(sim.url, success_ratio_floor=0.9, success_ratio_min_calls=20),
    )
    hook = IysHook()
    for _ in range(17):
        hook.get_brands()  # 18 successes with the token
    fail_next(sim, "/consents/status", 404, 100)
    for _ in range(2):
        assert hook.get_consent_status("+905321110001", ConsentType.MESAJ) is None
    # 18 / 20 = 90 %; one more 404 would make 18 / 21 = 85.7 %: not made.
    with pytest.raises(IysSuccessRatioGuardError) as stopped:
        hook.get_consent_status("+905321110001", ConsentType.MESAJ)
    message = str(stopped.value)
    assert "Not calling İYS consent_status" in message
    assert "90.0% success ratio" in message and "404×2" in message
    assert "success_ratio_floor" in message and "whitelist" in message
    assert stopped.value.ratio == pytest.approx(0.9)
    with pytest.raises(IysSuccessRatioGuardError, match="add_consent"):
        hook.add_consent(write())
    counters = sim_control(sim, "counters", method="GET")
    assert counters["single_status_calls"] == 2 and counters["writes"] == 0

    # Reads that cannot fail avoidably go on, and raise the ratio.
    assert hook.get_onay_recipients([PHONE], ConsentType.MESAJ) == set()
    hook.close()

    # Another task sees the same ledger through Postgres: still stopped until the ratio recovers.
    other = IysHook()
    with pytest.raises(IysSuccessRatioGuardError):
        other.get_consent_status("+905321110001", ConsentType.MESAJ)
    for _ in range(8):
        other.get_brands()  # 27 successes: 27 / 30 = 90 % even if the next call fails
    sim_control(sim, "faults", {"fail_next": []})
    assert other.get_consent_status("+905321110001", ConsentType.MESAJ) is None  # allowed again (empty here)
    other.close()


def test_a_few_404s_on_a_quiet_day_do_not_trip_the_guard(sim, pg, ledger):
    hook = IysHook()  # default floor 90 %, from 1000 judged calls
    fail_next(sim, "/consents/status", 404, 5)
    for _ in range(5):
        assert hook.get_consent_status("+905321110001", ConsentType.MESAJ) is None
    assert hook.success_ratio_24h().client_errors == 5
    assert hook.success_ratio_24h().ratio == pytest.approx(1 / 6)
    hook.close()
