"""The connection form's Test button (``IysHook.test_connection``) against the simulator and real Postgres.

Airflow runs the test inside the API server, from its IP: a click must not spend the hourly token
budget while a token is cached, and must send nothing during an H084 block.
"""

from __future__ import annotations

from datetime import UTC

import pytest

from iys_provider.exceptions import IysTokenBlockedError
from iys_provider.hooks import base
from iys_provider.hooks.iys import IysHook
from tests_support import (
    SIM_BRAND_CODE,
    SIM_IYS_CODE,
    SIM_PASSWORD,
    SIM_USERNAME,
    iys_connection_json_with,
    sim_control,
)


def token_requests(sim) -> int:
    return sim_control(sim, "counters", method="GET")["token_requests"]


def request_log(sim) -> list[dict]:
    return sim_control(sim, "requests", method="GET")["requests"]


@pytest.fixture
def ip_blocks_cleared(pg):
    """The shared-state reset keeps no block between tests; make sure of it on both sides."""
    pg.execute("DELETE FROM iys.ip_blocks")
    yield
    pg.execute("DELETE FROM iys.ip_blocks")


def test_a_cached_token_is_reused_and_no_token_is_requested(sim):
    IysHook().get_brands()  # a task's token, in the shared Postgres cache
    base._process_tokens.clear()  # the API server is another process: only Postgres holds the token
    before = token_requests(sim)
    assert before == 1

    ok, message = IysHook().test_connection()

    assert ok, message
    assert token_requests(sim) == before
    assert "reused the shared token" in message
    assert "API server's IP" in message


def test_without_a_cached_token_one_token_is_requested_and_then_shared(sim):
    ok, message = IysHook().test_connection()
    assert ok, message
    assert token_requests(sim) == 1
    assert "requested 1 new token" in message

    base._process_tokens.clear()
    ok, message = IysHook().test_connection()
    assert ok, message
    assert token_requests(sim) == 1


def test_during_an_h084_block_nothing_is_sent_and_the_end_is_named(sim, pg, ip_blocks_cleared):
    # A real H084: limit 2, token 1, then revoked tokens make the refresh (2) and password (3) grants.
    sim_control(sim, "config", {"token_limit_per_hour": 2})
    IysHook().get_brands()
    sim_control(sim, "revoke_tokens", {"refresh": True})
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook().get_brands()
    base._process_tokens.clear()
    sent = request_log(sim)

    ok, message = IysHook().test_connection()

    assert not ok
    assert request_log(sim) == sent
    (blocked_until,) = pg.execute("SELECT blocked_until FROM iys.ip_blocks").fetchone()
    assert f"{blocked_until.astimezone(UTC):%Y-%m-%d %H:%M:%S}" in message
    assert "not called" in message


def test_a_block_is_respected_even_with_a_valid_token_cached(sim, pg, ip_blocks_cleared):
    hook = IysHook()
    hook.get_brands()  # token cached in this process and in Postgres
    block = hook.shared_state.block_ip(hook.settings.ip_budget_key, 3600, "H084 seen by another worker")
    hook.close()
    sent = request_log(sim)

    ok, message = IysHook().test_connection()

    assert not ok
    assert request_log(sim) == sent
    assert f"{block.blocked_until.astimezone(UTC):%Y-%m-%d %H:%M:%S}" in message


def test_the_message_names_the_iys_code_and_every_brand_the_account_reads(pg_dsn, monkeypatch):
    from iys_simulator import SimulatorServer

    from tests.conftest import reset_shared_hook_state

    brands = [SIM_BRAND_CODE, SIM_BRAND_CODE + 1, SIM_BRAND_CODE + 2]
    with SimulatorServer(
        port=0, seed=5, username=SIM_USERNAME, password=SIM_PASSWORD, iys_code=SIM_IYS_CODE, brand_codes=brands
    ) as server:
        monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(server.url, brand_code=brands[1]))
        reset_shared_hook_state(pg_dsn)

        ok, message = IysHook().test_connection()

    assert ok, message
    assert f"İYS code {SIM_IYS_CODE}" in message
    assert f"brand {brands[1]}" in message
    assert "3 brand(s)" in message
    for code in brands:
        assert str(code) in message
