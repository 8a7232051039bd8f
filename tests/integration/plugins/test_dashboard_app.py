"""The İYS page's app checks the Airflow user itself: no or a bad token gets 401 and no data.

The app is mounted as the API server mounts plugin apps (``app.mount("/iys", …)``) on an app whose
auth manager is Airflow's configured one (SimpleAuthManager), initialised as the API server does;
tokens are the ones that auth manager signs. Data comes from a real PostgreSQL database.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iys_provider.plugins.app import STATIC, create_dashboard_app
from iys_provider.schema import migrate

BRAND = 700001


@pytest.fixture
def client(airflow_db, pg, pg_dsn):
    from airflow.api_fastapi.app import init_auth_manager

    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    pg.execute(
        "INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status) "
        "VALUES (%s, 'a@example.com', 'BIREYSEL', 'EPOSTA', 'ONAY')",
        (BRAND,),
    )
    pg.execute("INSERT INTO iys.sync_state (brand_code, stream) VALUES (%s, 'initial_sync')", (BRAND,))
    root = FastAPI()
    init_auth_manager(root)
    root.mount("/iys", create_dashboard_app(lambda: psycopg.connect(pg_dsn)))
    with TestClient(root) as client:
        yield client


def token_for(role: str | None, **kwargs) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="someone", role=role), **kwargs)


def get_with_cookie(client: TestClient, path: str, token: str):
    """A request carrying the token as the Airflow UI's session cookie, as a browser sends it."""
    client.cookies.set("_token", token)
    try:
        return client.get(path)
    finally:
        client.cookies.clear()


PROTECTED = ["/iys/", "/iys/api/brands", f"/iys/api/panels/{BRAND}", f"/iys/api/push/{BRAND}"]


@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_request_gets_401_and_no_data(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert "700001" not in response.text and "EPOSTA" not in response.text


@pytest.mark.parametrize("path", PROTECTED)
def test_bad_tokens_get_401(client, path):
    valid = token_for("ADMIN")
    tampered = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    expired = token_for("ADMIN", expiration_time_in_seconds=-60)
    for token in ("not-a-jwt", tampered, expired):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert get_with_cookie(client, path, token).status_code == 401


def test_user_without_access_to_dag_runs_gets_403(client):
    response = client.get("/iys/api/brands", headers={"Authorization": f"Bearer {token_for(None)}"})
    assert response.status_code == 403


def test_valid_token_in_the_ui_cookie_or_bearer_header_gets_the_data(client):
    token = token_for("VIEWER")
    by_cookie = get_with_cookie(client, "/iys/api/brands", token)
    assert by_cookie.status_code == 200 and by_cookie.json() == {"brands": [BRAND]}
    panels = client.get(f"/iys/api/panels/{BRAND}", headers={"Authorization": f"Bearer {token}"})
    assert panels.status_code == 200
    assert panels.json()["consents"]["counts"]["EPOSTA"]["ONAY"] == 1
    assert panels.json()["consents"]["sendable"] is None  # no run has counted it yet: "not recorded"
    page = get_with_cookie(client, "/iys/", token)
    assert page.status_code == 200 and "chart-4.5.1.umd.min.js" in page.text
    assert get_with_cookie(client, f"/iys/api/panels/{BRAND + 1}", token).status_code == 404


def test_push_panel_alone_for_the_page_to_refresh(client, pg):
    pg.execute(
        "INSERT INTO iys.push_channels (brand_code, channel, last_test_at) VALUES (%s, 'EPOSTA', now())", (BRAND,)
    )
    token = token_for("VIEWER")
    push = get_with_cookie(client, f"/iys/api/push/{BRAND}", token)
    assert push.status_code == 200
    heard = {c["channel"]: c["heard_from"] for c in push.json()["channels"]}
    assert heard == {"MESAJ": False, "ARAMA": False, "EPOSTA": True}
    assert push.json()["channels"][2]["last_push_at"] is None  # only the registration test record so far
    assert get_with_cookie(client, f"/iys/api/push/{BRAND + 1}", token).status_code == 404
    assert (
        client.get(f"/iys/api/push/{BRAND}", headers={"Authorization": f"Bearer {token_for(None)}"}).status_code == 403
    )


def every_url_of_the_app() -> list[str]:
    """Each route of the app with its parameters filled, each file of the static mount, the paths
    FastAPI would give its docs, and one that matches nothing."""
    from starlette.routing import Mount, Route

    urls = ["/iys/openapi.json", "/iys/docs", "/iys/redoc", "/iys/docs/oauth2-redirect", "/iys/no-such-page"]
    for route in create_dashboard_app(lambda: None).routes:
        if isinstance(route, Route):  # the app's own and any FastAPI adds (OpenAPI, docs)
            urls.append("/iys" + route.path.replace("{brand_code}", str(BRAND)))
        elif isinstance(route, Mount):
            directory = Path(route.app.directory)
            urls += [
                f"/iys{route.path}/{file.relative_to(directory)}" for file in directory.rglob("*") if file.is_file()
            ]
        else:  # a kind of route this walk would miss: teach it first
            raise AssertionError(f"unexpected route {route!r}")
    return urls


EVERY_URL = every_url_of_the_app()


def test_the_walk_covers_the_page_its_data_and_its_static_files():
    assert set(PROTECTED) <= set(EVERY_URL)
    assert {"/iys/static/index.html", "/iys/static/dashboard.js", "/iys/static/icon.svg"} <= set(EVERY_URL)


@pytest.mark.parametrize("url", EVERY_URL)
def test_every_url_refuses_anonymous_and_forged_requests(client, url):
    forged = token_for("ADMIN")
    forged = forged[:-4] + ("AAAA" if not forged.endswith("AAAA") else "BBBB")
    for method in (client.get, client.head):
        anonymous = method(url)
        assert anonymous.status_code == 401, (url, anonymous.status_code)
        assert "EPOSTA" not in anonymous.text and "<script" not in anonymous.text
    assert client.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert get_with_cookie(client, url, forged).status_code == 401
    assert client.get(url, headers={"Authorization": f"Bearer {token_for(None)}"}).status_code == 403


def test_a_logged_in_user_gets_the_static_files_but_no_api_docs(client):
    token = token_for("VIEWER")
    for name in ("chart-4.5.1.umd.min.js", "dashboard.js", "dashboard.css", "icon.svg", "index.html"):
        assert get_with_cookie(client, f"/iys/static/{name}", token).status_code == 200, name
    for path in ("/iys/openapi.json", "/iys/docs", "/iys/redoc"):
        assert get_with_cookie(client, path, token).status_code == 404, path


def test_the_page_loads_no_third_party_script():
    page = (STATIC / "index.html").read_text("utf-8")
    sources = re.findall(r"""<(?:script|link)[^>]*(?:src|href)=["']([^"']+)""", page)
    assert sources and all(not re.match(r"^(https?:)?//", source) for source in sources), sources
