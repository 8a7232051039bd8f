"""A newcomer's shell next to ``make airflow``, without starting the stack.

* The banner's alternative to ``.local/bin/airflow``, ``set -a; . .local/airflow.env; set +a``
  then ``airflow …``, works in a fresh terminal whose PATH lacks the venv: the env file
  ``write_cli_env`` writes (the script sourced, so only its functions run) puts the venv first.
* Ctrl-C while the script waits on its Python helper (it reaches that foreground process too)
  ends the helper with 130 and no traceback.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys

import airflow

from tests_support import interruptible_like_a_terminal

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "airflow_local.sh"
HELPER = ROOT / "scripts" / "local_stack.py"
VENV_BIN = pathlib.Path(sys.executable).parent
#: What a fresh terminal has: system directories, no virtualenv.
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def clean_shell(command: str, home: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", "-c", command],
        env={"HOME": str(home), "PATH": CLEAN_PATH, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sourcing_the_env_file_puts_the_venv_airflow_on_path(tmp_path):
    local_dir = tmp_path / "local"
    airflow_home = local_dir / "airflow-home"
    written = subprocess.run(
        [
            "/bin/bash",
            "-c",
            f"source {shlex.quote(str(SCRIPT))} && export AIRFLOW_HOME={shlex.quote(str(airflow_home))} "
            "AIRFLOW__CORE__LOAD_EXAMPLES=False && write_cli_env",
        ],
        env={**os.environ, "IYS_LOCAL_DIR": str(local_dir), "VENV_BIN": str(VENV_BIN)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    env_file = local_dir / "airflow.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # it may hold connection passwords

    before = clean_shell("command -v airflow", tmp_path)
    assert before.returncode != 0, f"this test needs a PATH without airflow, found {before.stdout}"

    sourced = f"set -a; . {shlex.quote(str(env_file))}; set +a"
    after = clean_shell(f'{sourced}; command -v airflow; echo "$AIRFLOW_HOME"; airflow version', tmp_path)
    assert after.returncode == 0, after.stderr
    found, home, version = after.stdout.split()[:3]
    assert found == str(VENV_BIN / "airflow") and home == str(airflow_home)
    assert version == airflow.__version__
    # Sourced twice (a second `set -a; . …` in the same terminal), PATH gains the venv once.
    twice = clean_shell(f'{sourced}; {sourced}; echo "$PATH"', tmp_path)
    assert twice.stdout.strip() == f"{VENV_BIN}:{CLEAN_PATH}"
    # The wrapper the banner prints works from the same fresh terminal.
    wrapper = clean_shell(f"{shlex.quote(str(local_dir / 'bin' / 'airflow'))} version", tmp_path)
    assert wrapper.returncode == 0 and wrapper.stdout.strip() == airflow.__version__, wrapper.stderr


def test_ctrl_c_while_waiting_for_airflow_exits_quietly():
    # A listener that never answers: the helper's health request is in flight when Ctrl-C comes.
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]
        helper = subprocess.Popen(
            [sys.executable, str(HELPER), "wait-ready", f"http://127.0.0.1:{port}", "--timeout", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible_like_a_terminal,
        )
        try:
            connection, _ = server.accept()  # the helper is inside its wait loop now
            with connection:
                helper.send_signal(signal.SIGINT)
                out, err = helper.communicate(timeout=60)
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
    assert helper.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out == ""
