"""Issue #12 (2): a short-lived token costs one token request per lifetime, not one per request.

İYS may issue tokens that live less than the hook's 5-minute refresh margin (observed:
``expires_in: 240``). The margin follows the lifetime (an eighth of it, at most 5 minutes), so
a token serves 7/8 of its life: over a run of R seconds with tokens of L seconds the hook asks
for ⌊8R/7L⌋ + 1 tokens, within R/L + 1 for runs of up to 6 lifetimes.

Two runs of steady requests against the simulator:

* simulated time: 90-s and 240-s tokens over 4 lifetimes, the simulator's clock and the hook's
  clock (``iys_provider.hooks.base.utcnow``) moved forward together between requests, so the
  run takes seconds;
* real time: 60-s tokens over 130 s (2 full lifetimes and some), nothing patched — the
  simulator's token expiry and the hook's clock are the real clocks.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest

from iys_provider.hooks import base
from iys_provider.hooks.iys import IysHook
from tests_support import iys_connection_json_with, sim_control


def token_calls(pg) -> list[tuple[str, str]]:
    return [tuple(row) for row in pg.execute("SELECT grant_type, outcome FROM iys.token_requests ORDER BY id")]


def assert_one_token_per_lifetime(sim, pg, *, run_seconds: float, lifetime: int) -> int:
    """Tokens within R/L + 1 and exactly the adaptive margin's count; no 401, no H084."""
    counters = sim_control(sim, "counters", method="GET")
    tokens = counters["tokens_issued"]
    assert tokens <= run_seconds / lifetime + 1, (tokens, run_seconds, lifetime)
    assert tokens == math.floor(run_seconds / (lifetime * 7 / 8)) + 1
    assert counters["token_requests"] == tokens == len(token_calls(pg))
    assert all(outcome == "200" for _, outcome in token_calls(pg))
    assert counters["h084"] == 0
    assert counters["responses_by_status"].get("401", 0) == 0  # no request ever carried a dead token
    return tokens


@pytest.mark.parametrize("lifetime", [90, 240])
def test_short_tokens_over_simulated_time(sim, pg, monkeypatch, lifetime):
    # Below İYS's 10 per second, as in production: a 429 here would be retried and blur the token count.
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url))
    sim_control(sim, "config", {"access_ttl": lifetime})
    offset = timedelta(0)
    real_utcnow = base.utcnow
    monkeypatch.setattr(base, "utcnow", lambda: real_utcnow() + offset)

    steps_per_lifetime, lifetimes = 16, 4
    step = lifetime / steps_per_lifetime
    hook = IysHook()
    for i in range(steps_per_lifetime * lifetimes):  # requests at 0, L/16, …, 4L − L/16
        if i % 10 == 0:
            hook = IysHook()  # tasks come and go; the token is shared
        hook.get_brands()  # raises IysTokenBlockedError if the budget ran out
        sim_control(sim, "clock", {"advance_seconds": step})
        offset += timedelta(seconds=step)
    tokens = assert_one_token_per_lifetime(sim, pg, run_seconds=lifetimes * lifetime, lifetime=lifetime)
    assert tokens == 5  # refreshed at 7/8, 14/8, 21/8 and 28/8 of a lifetime
    assert [grant for grant, _ in token_calls(pg)] == ["password"] + ["refresh_token"] * 4


@pytest.mark.real_time
def test_60_second_tokens_over_two_minutes_of_real_time(sim, pg, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url))
    lifetime, run_seconds, pace = 60, 130.0, 1.0
    sim_control(sim, "config", {"access_ttl": lifetime})
    start = time.monotonic()
    hook, requests_made = IysHook(), 0
    while time.monotonic() - start < run_seconds:
        if requests_made % 10 == 0:
            hook = IysHook()
        hook.get_brands()
        requests_made += 1
        time.sleep(pace)  # the scenario: a steady request a second, not a synchronisation
    tokens = assert_one_token_per_lifetime(sim, pg, run_seconds=time.monotonic() - start, lifetime=lifetime)
    assert tokens == 3  # at 0 s, ~52.5 s and ~105 s; 130 / 60 + 1 = 3.17
    assert requests_made >= 100
