"""Security and privacy: parameterised SQL, nothing personal or secret in any log, TLS verified by default."""

from __future__ import annotations

import ast
import pathlib
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chaos.chaos_support import (
    addresses_of,
    assert_brand_promise,
    run_dag,
    sim_events,
    synced_world_with_traffic,
)

from tests_support import SIM_PASSWORD, iys_connection_json_with

PRODUCT = pathlib.Path(__file__).resolve().parents[2] / "include" / "iys_provider" / "src" / "iys_provider"
SQL_CALLS = {"execute", "executemany", "copy", "SQL"}


def _is_dynamic_string(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _is_dynamic_string(node.left) or _is_dynamic_string(node.right) or isinstance(node.left, ast.Constant)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return isinstance(node.func.value, ast.Constant)  # "...".format(...), not sql.SQL(...).format(...)
    return False


def test_all_sql_is_parameterised():
    """No execute()/copy()/sql.SQL() receives SQL text built by f-string, % or str.format."""
    offenders = []
    for path in sorted(PRODUCT.rglob("*.py")):
        if "simulator" in path.parts:
            continue  # the simulator speaks no SQL
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in SQL_CALLS and _is_dynamic_string(node.args[0]):
                    offenders.append(f"{path.relative_to(PRODUCT)}:{node.lineno}")
    assert not offenders, f"SQL built from strings: {offenders}"


def test_a_full_run_logs_no_phone_email_token_or_password(airflow_db, scenario, pg, capfd, caplog):
    caplog.set_level("DEBUG")
    sim = scenario.sim
    scenario.inject(
        "log capture of a full initial + incremental run (with retries and a 422)", faults={"error_rate": 0.05}
    )
    people, traffic = synced_world_with_traffic(sim, pg)
    expected = {e["transactionId"] for e in sim_events(sim)}
    assert run_dag("iys_incremental_sync").state == "success"
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected, traffic=traffic)

    captured = capfd.readouterr()
    logs = [captured.out, captured.err, caplog.text]
    home = pathlib.Path(airflow_db) / "logs"
    if home.exists():
        logs += [p.read_text(encoding="utf-8", errors="replace") for p in home.rglob("*") if p.is_file()]
    text = "\n".join(logs)
    assert "Outbox:" in text and "Batch " in text, "the task logs were not captured"

    secrets = {"İYS password": SIM_PASSWORD}
    for access, refresh in pg.execute("SELECT access_token, refresh_token FROM iys.api_tokens").fetchall():
        secrets.update({"access token": access, "refresh token": refresh})
    personal = set()
    for recipient, _ in addresses_of(people + traffic.new_users):
        personal.add(recipient)
        if recipient.startswith("+90"):
            personal.add(recipient[3:])  # the national form 5XXXXXXXXX
    for _, phone, email in people + traffic.new_users:
        for raw in (phone, email):
            if raw and len(raw.strip()) >= 10:
                personal.add(raw.strip())
    leaks = [f"{kind}" for kind, value in secrets.items() if value and value in text]
    leaks += [value for value in sorted(personal) if value in text]
    assert not leaks, f"{len(leaks)} unmasked values in the logs, e.g. {leaks[:5]}"


def test_tls_verification_is_on_by_default(chaos_sim, monkeypatch, tmp_path):
    from iys_provider.exceptions import IysApiError
    from iys_provider.hooks.iys import IysHook

    default_json = iys_connection_json_with("https://iys.example.invalid")
    import json

    conn = json.loads(default_json)
    conn["extra"].pop("verify_ssl")
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", json.dumps(conn))
    hook = IysHook()
    assert hook.settings.verify_ssl is True and hook.session.verify is True

    # A server with a self-signed certificate (a man in the middle) is refused.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"access_token": "x", "expires_in": 7200}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn["host"] = f"https://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", json.dumps(conn))
        from iys_provider.hooks import base as module

        module._process_tokens.clear()
        with pytest.raises(IysApiError, match="SSLError"):
            IysHook(max_attempts=1).get_brands()
        assert hits == [], "a request (with the password) reached a server with an untrusted certificate"
    finally:
        server.shutdown()
        server.server_close()


def test_the_source_query_is_run_only_by_user_source_read():
    """In ``people/user_source.py`` only ``UserSource._read`` (read-only transaction, one statement) executes SQL,
    and no other module turns the source query's text into SQL: it is stored as a parameter at most."""
    tree = ast.parse((PRODUCT / "people" / "user_source.py").read_text(encoding="utf-8"))
    executing = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in {"execute", "executemany", "copy"}:
                    executing.add(function.name)
    assert executing == {"_read"}
    offenders = []
    for path in sorted(PRODUCT.rglob("*.py")):
        if path.relative_to(PRODUCT).as_posix() == "people/user_source.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_sql = isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "SQL"
            if is_sql and any(getattr(n, "attr", "") == "recipients_sql" for n in ast.walk(node)):
                offenders.append(f"{path.relative_to(PRODUCT)}:{node.lineno}")
    assert not offenders, f"the source query composed into SQL outside user_source: {offenders}"
