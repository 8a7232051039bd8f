"""Who may read the İYS page: a user of this Airflow, checked with Airflow's own token validation.

Airflow does not authenticate the FastAPI apps of plugins, so every route of the page depends on
:func:`require_reader`. The token is the one the Airflow UI holds (its ``_token`` cookie, which the
browser sends to the page's iframe on the same origin) or an ``Authorization: Bearer`` header, as
the REST API accepts. It is validated by the configured auth manager
(``get_user_from_token``: signature, expiry, revocation), exactly as the API server's own
``get_user`` does; no JWT is decoded here.

======================================  ======
request                                 answer
======================================  ======
no token                                401
token the auth manager rejects          401 (the core API says 403 for a bad signature; a
(bad signature, expired, revoked)       page has nothing to tell apart)
valid token, user may not read DAG      403
runs
valid token, user may read DAG runs     the data
======================================  ======
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status

BEARER = "bearer "


def request_token(request: Request) -> str | None:
    """The bearer header wins over the session cookie, as in Airflow's ``get_user``."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    if header.lower().startswith(BEARER) and header[len(BEARER) :].strip():
        return header[len(BEARER) :].strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN) or None


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def require_reader(request: Request) -> Any:
    """FastAPI dependency: the Airflow user behind the request, allowed to read DAG runs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from jwt import InvalidTokenError

    token = request_token(request)
    if not token:
        raise unauthorized("Not authenticated: log in to Airflow first")
    auth_manager = get_auth_manager()
    try:
        user = await auth_manager.get_user_from_token(token)
    except InvalidTokenError:  # ExpiredSignatureError included
        raise unauthorized("Invalid or expired token") from None
    if not auth_manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="This user may not read DAG runs")
    return user
