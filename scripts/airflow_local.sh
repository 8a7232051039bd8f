#!/usr/bin/env bash
# A complete local stack for developing the İYS DAGs, without Docker:
#
#   * the İYS simulator            http://127.0.0.1:${IYS_SIM_PORT:-8099}   (user demo / demo-secret)
#   * PostgreSQL                   $IYS_POSTGRES_URI, else 127.0.0.1:5432, else an embedded pgserver
#   * `airflow standalone`         http://127.0.0.1:${AIRFLOW_PORT:-8080}   (LocalExecutor)
#   * the İYS push receiver        https://127.0.0.1:${IYS_PUSH_PORT:-8095} (registered with the simulator)
#
# with the iys_default / iys_postgres connections and a small demo users table; no pool is needed
# (the İYS tasks run in default_pool unless IYS_POOL names one). Runs in the foreground; Ctrl-C
# (or SIGTERM) stops every process it started, however often it is pressed.
#
# The `airflow` CLI in another terminal: $IYS_LOCAL_DIR/bin/airflow (e.g. `.local/bin/airflow dags
# list`) runs the venv's airflow with this stack's settings, read from $IYS_LOCAL_DIR/airflow.env.
#
# Usage: scripts/airflow_local.sh            (or: make airflow)
#
# Knobs (environment):
#   IYS_POSTGRES_URI         use this database for public.users and the iys schema
#   IYS_POSTGRES_MODE        auto (default) | uri | local | embedded  — force a PostgreSQL choice
#   IYS_DEMO_DB              database created on a local/embedded server (default iys_demo)
#   IYS_DEMO_USERS           demo users to create when public.users is missing (default 2000; 0 = none)
#   IYS_LOCAL_DIR            state directory (default ./.local: airflow-home, pgdata, logs)
#   IYS_SIM_PORT             simulator port (default 8099)
#   IYS_SIM_LATENCY_MS       simulated İYS latency per request (default 0)
#   IYS_SIM_LATENCY_JITTER_MS  extra random latency 0..N ms (default 0)
#   IYS_SIM_BRAND_CODES      the simulated account's brands, comma separated (default 700001)
#   IYS_RATE_LIMIT           rate_limit_per_second of the iys connection (default 8; İYS allows 10)
#   IYS_API_CONCURRENCY      İYS tasks per DAG run at once (default IYS_POOL_SLOTS, else 4)
#   IYS_POOL                 pool for the İYS tasks, created with IYS_POOL_SLOTS slots (default: none,
#                            i.e. default_pool; "iys_api" shares one budget with other DAGs)
#   IYS_POOL_SLOTS           slots of that pool (default 4)
#   AIRFLOW_PORT             API server / UI port (default 8080)
#   AIRFLOW_PARALLELISM      [core] parallelism (default 4 × CPU cores: tasks mostly wait on İYS)
#   AIRFLOW_DAGS_FOLDER      DAG folder (default ./dags)
#   AIRFLOW_LOG_SERVER_PORT  worker log server port (default 8793; the triggerer's is this + 1)
#   AIRFLOW_METADATA_URI     SQLAlchemy URL of Airflow's own database (default: a database
#                            "<IYS_DEMO_DB>_airflow" on the local/embedded server; SQLite with IYS_POSTGRES_URI)
#   IYS_PUSH                 1 (default): run the push receiver and register it with the simulator; 0: don't
#   IYS_PUSH_PORT            push receiver port (default 8095; https with a throw-away CA in $IYS_LOCAL_DIR/push-tls)
#   IYS_READY_FILE           when set, a JSON file with URLs and the admin login is written here once
#                            everything is up (used by bench/bench_initial_sync.py)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
PY="$VENV_BIN/python"
HELPER="$ROOT/scripts/local_stack.py"
# `airflow standalone` starts its components as plain `airflow ...`: the venv must come first.
export PATH="$VENV_BIN:$PATH"

LOCAL_DIR="$(mkdir -p "${IYS_LOCAL_DIR:-$ROOT/.local}" && cd "${IYS_LOCAL_DIR:-$ROOT/.local}" && pwd)"
SIM_PORT="${IYS_SIM_PORT:-8099}"
SIM_URL="http://127.0.0.1:$SIM_PORT"
API_PORT="${AIRFLOW_PORT:-8080}"
API_URL="http://127.0.0.1:$API_PORT"
DEMO_DB="${IYS_DEMO_DB:-iys_demo}"
DEMO_USERS="${IYS_DEMO_USERS:-2000}"
RATE_LIMIT="${IYS_RATE_LIMIT:-8}"
POOL_SLOTS="${IYS_POOL_SLOTS:-4}"
# Read by the DAG files at parse time (dags/common.py), so exported to `airflow standalone`.
export IYS_API_CONCURRENCY="${IYS_API_CONCURRENCY:-$POOL_SLOTS}"
export IYS_POOL="${IYS_POOL:-}"
PUSH="${IYS_PUSH:-1}"
PUSH_PORT="${IYS_PUSH_PORT:-8095}"
PUSH_URL="https://127.0.0.1:$PUSH_PORT"
LOG_DIR="$LOCAL_DIR/logs"
mkdir -p "$LOG_DIR"

CHILD_PIDS=()      # process-group leaders we started (each child runs in its own session)
PG_DSN=""          # DSN of the database holding public.users and the iys schema
PG_SERVER_URI=""   # DSN of the server's maintenance database (to create databases), if we may
METADATA_URI=""

log() { printf '\033[1;34m[airflow-local]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[airflow-local]\033[0m %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------- process handling

# Start a command in its own session/process group (setsid), so that cleanup can stop it and
# everything it forks (standalone's scheduler, api-server, task processes …) in one signal, and
# so that the terminal's Ctrl-C reaches only this script, which then stops children in order.
start_child() {
    local name="$1"; shift
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
    CHILD_PIDS+=("$!")
    log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

stop_group() {
    local pid="$1" signal="$2"
    kill "-$signal" -- "-$pid" 2>/dev/null || true
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# Stop children newest first: Airflow before PostgreSQL, so tasks don't see the DB vanish.
# SIGINT first (standalone shuts its components down on KeyboardInterrupt, pgserver stops cleanly),
# then SIGTERM, then SIGKILL for anything that still hangs on. Further Ctrl-C / SIGTERM / SIGHUP
# during this are ignored (a second Ctrl-C must not kill the script and orphan its children);
# only SIGKILL of the script itself can still leave them behind.
cleanup() {
    local status=$?
    trap '' INT TERM HUP
    trap - EXIT
    [ "${#CHILD_PIDS[@]}" -eq 0 ] && exit "$status"
    log "stopping ${#CHILD_PIDS[@]} process group(s) ..."
    local i pid waited
    for (( i=${#CHILD_PIDS[@]}-1; i>=0; i-- )); do
        pid="${CHILD_PIDS[$i]}"
        group_alive "$pid" || continue
        stop_group "$pid" INT
        for waited in $(seq 1 40); do group_alive "$pid" || break; sleep 0.25; done
        group_alive "$pid" && stop_group "$pid" TERM
        for waited in $(seq 1 40); do group_alive "$pid" || break; sleep 0.25; done
        group_alive "$pid" && stop_group "$pid" KILL
    done
    wait 2>/dev/null || true
    log "stopped"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

wait_for_port() {
    local port="$1" what="$2" tries="${3:-100}"
    for _ in $(seq 1 "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.2
    done
    die "$what did not open port $port (see $LOG_DIR)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --------------------------------------------------------------------------- components

start_simulator() {
    port_free "$SIM_PORT" || die "port $SIM_PORT is taken (another simulator?); set IYS_SIM_PORT"
    # The simulator enforces İYS's real limits (10 req/s per IP, 10 token requests per hour).
    start_child simulator "$PY" -m iys_simulator --host 127.0.0.1 --port "$SIM_PORT" \
        --username demo --password demo-secret --iys-code 700001 --brand-code "${IYS_SIM_BRAND_CODES:-700001}" \
        --latency-ms "${IYS_SIM_LATENCY_MS:-0}" --seed 1
    wait_for_port "$SIM_PORT" "the İYS simulator"
    if [ "${IYS_SIM_LATENCY_JITTER_MS:-0}" != "0" ]; then
        curl -fsS -X POST "$SIM_URL/__sim/faults" -H 'Content-Type: application/json' \
            -d "{\"latency_jitter_ms\": ${IYS_SIM_LATENCY_JITTER_MS}}" >/dev/null
    fi
}

local_postgres_reachable() {
    "$PY" - <<'EOF' 2>/dev/null
import psycopg, sys
try:
    psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2).close()
except Exception:
    sys.exit(1)
EOF
}

start_embedded_postgres() {
    local uri_file="$LOCAL_DIR/pgserver.uri"
    rm -f "$uri_file"
    start_child pgserver "$PY" "$HELPER" embedded-postgres "$LOCAL_DIR/pgdata" "$uri_file"
    for _ in $(seq 1 300); do [ -s "$uri_file" ] && break; sleep 0.2; done
    [ -s "$uri_file" ] || die "embedded PostgreSQL did not start (see $LOG_DIR/pgserver.log)"
    PG_SERVER_URI="$(cat "$uri_file")"
}

# Pick the PostgreSQL server: explicit URI > the machine's own server > an embedded one.
resolve_postgres() {
    local mode="${IYS_POSTGRES_MODE:-auto}"
    if [ "$mode" = auto ]; then
        if [ -n "${IYS_POSTGRES_URI:-}" ]; then mode=uri
        elif local_postgres_reachable; then mode=local
        else mode=embedded; fi
    fi
    case "$mode" in
        uri)
            [ -n "${IYS_POSTGRES_URI:-}" ] || die "IYS_POSTGRES_MODE=uri needs IYS_POSTGRES_URI"
            PG_DSN="$IYS_POSTGRES_URI"
            log "PostgreSQL: IYS_POSTGRES_URI (database used as is)";;
        local)
            PG_SERVER_URI="postgresql://postgres@127.0.0.1:5432/postgres"
            log "PostgreSQL: local server at 127.0.0.1:5432";;
        embedded)
            start_embedded_postgres
            log "PostgreSQL: embedded pgserver, data in $LOCAL_DIR/pgdata";;
        *) die "IYS_POSTGRES_MODE must be auto, uri, local or embedded";;
    esac
    if [ -n "$PG_SERVER_URI" ]; then
        PG_DSN="$("$PY" "$HELPER" ensure-database "$PG_SERVER_URI" "$DEMO_DB")"
    fi
    # Airflow's own tables: PostgreSQL when we have a server we may create databases on, because
    # LocalExecutor runs tasks in parallel and SQLite serialises every write; else SQLite.
    if [ -n "${AIRFLOW_METADATA_URI:-}" ]; then
        METADATA_URI="$AIRFLOW_METADATA_URI"
    elif [ -n "$PG_SERVER_URI" ]; then
        METADATA_URI="$("$PY" "$HELPER" sqlalchemy-url \
            "$("$PY" "$HELPER" ensure-database "$PG_SERVER_URI" "${DEMO_DB}_airflow")")"
    else
        METADATA_URI="sqlite:///$LOCAL_DIR/airflow-home/airflow.db"
    fi
}

# Everything Airflow reads from the environment, exported so the CLI calls below and
# `airflow standalone` (and the components it spawns) see the same configuration.
configure_airflow() {
    export AIRFLOW_HOME="$LOCAL_DIR/airflow-home"
    mkdir -p "$AIRFLOW_HOME"
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$METADATA_URI"
    export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW_DAGS_FOLDER:-$ROOT/dags}"
    # The project's plugins/ (the İYS page, plugins/iys_dashboard.py), as docker-compose.yaml mounts it.
    export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
    export AIRFLOW__CORE__LOAD_EXAMPLES=False
    export AIRFLOW__CORE__EXECUTOR=LocalExecutor
    # Batch tasks spend most of their time waiting for İYS, so a few per core is fine; the
    # iys_api pool (not parallelism) is what keeps İYS work within the request budget.
    local cores; cores="$(nproc 2>/dev/null || echo 2)"
    export AIRFLOW__CORE__PARALLELISM="${AIRFLOW_PARALLELISM:-$(( cores * 4 ))}"
    export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="$AIRFLOW__CORE__PARALLELISM"
    # New or edited DAG files show up within 30 s instead of 5 min.
    export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30
    export AIRFLOW__CORE__TEST_CONNECTION=Enabled
    export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
    # An idle scheduler loop sleeps this long (Airflow's default: 1 s), and every hand-off from one
    # task to the next (plan → batches → finish → run done) waits for about two loops: 0.25 s
    # makes those about 2 s shorter per initial sync, for a few more cheap queries when idle.
    export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.25
    # Listen on localhost only; tasks reach the Execution API at the same port. Changing the
    # port without EXECUTION_API_SERVER_URL makes every task die connecting to :8080.
    export AIRFLOW__API__HOST=127.0.0.1
    export AIRFLOW__API__PORT="$API_PORT"
    export AIRFLOW__API__BASE_URL="$API_URL"
    export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$API_URL/execution/"
    # Two stacks (dev + benchmark) can run side by side only with distinct log-server ports.
    local log_port="${AIRFLOW_LOG_SERVER_PORT:-8793}"
    export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$log_port"
    export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$(( log_port + 1 ))"
    # Connections from the environment: what tasks use (env wins over the metadata DB).
    eval "$("$PY" "$HELPER" connections --pg-dsn "$PG_DSN" --sim-url "$SIM_URL" \
        --rate-limit "$RATE_LIMIT" --import-file "$AIRFLOW_HOME/connections.json")"
    write_cli_env
}

# The settings above live only in this process's environment; airflow.cfg in AIRFLOW_HOME still
# names SQLite. For the CLI in another terminal: an env file with every AIRFLOW*/IYS_* export, and
# a wrapper that sources it and runs the venv's airflow (what the banner prints).
CLI_ENV="$LOCAL_DIR/airflow.env"
CLI="$LOCAL_DIR/bin/airflow"
write_cli_env() {
    mkdir -p "$LOCAL_DIR/bin"
    (
        umask 077
        export -p | grep -E '^declare -x (AIRFLOW|IYS_)[A-Za-z0-9_]*=' >"$CLI_ENV"
        # So that `set -a; . airflow.env; set +a` in a fresh terminal finds the venv's `airflow`;
        # PATH is the sourcing shell's own, read when sourced, not this one's.
        printf 'case ":$PATH:" in *:%q:*) ;; *) PATH=%q:$PATH ;; esac\n' "$VENV_BIN" "$VENV_BIN" >>"$CLI_ENV"
    )
    {
        echo '#!/usr/bin/env bash'
        echo '# Written by scripts/airflow_local.sh: the venv airflow CLI with the local stack settings.'
        echo "set -a; . $(printf %q "$CLI_ENV"); set +a"
        echo "exec $(printf %q "$VENV_BIN/airflow") \"\$@\""
    } >"$CLI"
    chmod +x "$CLI"
}

# Tables first, then the connections (also stored in the DB so the UI lists and can test them;
# `connections import --overwrite` keeps the iys type and is idempotent, unlike `add`), and the
# pool only when IYS_POOL names one (the DAGs need none).
prepare_metadata() {
    port_free "$API_PORT" || die "port $API_PORT is taken; set AIRFLOW_PORT"
    log "migrating the Airflow metadata database ..."
    airflow db migrate >>"$LOG_DIR/airflow-cli.log" 2>&1 || die "airflow db migrate failed (see $LOG_DIR/airflow-cli.log)"
    airflow connections import --overwrite "$AIRFLOW_HOME/connections.json" >>"$LOG_DIR/airflow-cli.log" 2>&1 \
        || die "importing connections failed (see $LOG_DIR/airflow-cli.log)"
    log "connections iys_default and iys_postgres are set"
    if [ -n "$IYS_POOL" ]; then
        airflow pools set "$IYS_POOL" "$POOL_SLOTS" "İYS API rate budget" >>"$LOG_DIR/airflow-cli.log" 2>&1 \
            || die "creating the $IYS_POOL pool failed (see $LOG_DIR/airflow-cli.log)"
        log "İYS tasks run in pool $IYS_POOL ($POOL_SLOTS slots), at most $IYS_API_CONCURRENCY per run"
    else
        log "İYS tasks run in default_pool, at most $IYS_API_CONCURRENCY per run (no pool to create)"
    fi
}

# Demo users whose addresses the simulator knows: user i has phone +90532<i, 7 digits> and
# e-mail user<i>@example.com, spelt messily in the table; a few are broken on purpose.
seed_demo_data() {
    [ "$DEMO_USERS" -gt 0 ] || return 0
    "$PY" "$HELPER" seed-demo-users "$PG_DSN" "$DEMO_USERS" | while read -r line; do log "$line"; done
    # The simulator keeps its state in memory: give it the population again on every start.
    curl -fsS -X POST "$SIM_URL/__sim/seed_synthetic" -H 'Content-Type: application/json' \
        -d "{\"count\": $DEMO_USERS, \"start\": 1}" >/dev/null
}

# The push receiver with a throw-away CA the simulator (as İYS) trusts: İYS registers only https.
start_push_receiver() {
    [ "$PUSH" = 1 ] || return 0
    port_free "$PUSH_PORT" || die "port $PUSH_PORT is taken; set IYS_PUSH_PORT (or IYS_PUSH=0)"
    eval "$("$PY" "$HELPER" push-tls "$LOCAL_DIR/push-tls")"
    curl -fsS -X POST "$SIM_URL/__sim/config" -H 'Content-Type: application/json' \
        -d "{\"push_ca_file\": \"$PUSH_TLS_CA_FILE\"}" >/dev/null
    start_child push-receiver "$VENV_BIN/iys-push-receiver" --host 127.0.0.1 --port "$PUSH_PORT" \
        --certfile "$PUSH_TLS_CERT_FILE" --keyfile "$PUSH_TLS_KEY_FILE"
    wait_for_port "$PUSH_PORT" "the push receiver" 300  # it imports Airflow to read the connections
}

# Register the three channels of every brand ([iys] connections) with the simulator, as a brand
# does once with İYS.
register_push() {
    [ "$PUSH" = 1 ] || return 0
    local conns conn
    conns="$("$PY" -c 'from iys_provider.config import load_settings; print(" ".join(load_settings("connections").connections))')"
    for conn in $conns; do
        "$VENV_BIN/iys-push-registration" register --conn-id "$conn" --receiver-url "$PUSH_URL" \
            >>"$LOG_DIR/push-registration.log" 2>&1 \
            || die "registering the push receiver for $conn failed (see $LOG_DIR/push-registration.log)"
    done
    log "push receiver $PUSH_URL registered for ARAMA, MESAJ and EPOSTA of: $conns"
}

start_airflow() {
    start_child airflow-standalone airflow standalone
    log "waiting for Airflow (scheduler, dag-processor, triggerer, api-server) ..."
    "$PY" "$HELPER" wait-ready "$API_URL" --timeout 300 \
        || die "Airflow did not become healthy (see $LOG_DIR/airflow-standalone.log)"
}

admin_password() {
    local file="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
    for _ in $(seq 1 50); do [ -s "$file" ] && break; sleep 0.2; done
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("admin", "?"))' "$file" 2>/dev/null || echo "?"
}

announce() {
    local password; password="$(admin_password)"
    if [ -n "${IYS_READY_FILE:-}" ]; then
        # Written to a temporary name and renamed, so a reader never sees half a file.
        "$PY" -c 'import json,sys; json.dump(dict(zip(sys.argv[2::2], sys.argv[3::2])), open(sys.argv[1], "w"))' \
            "$IYS_READY_FILE.tmp" api_url "$API_URL" sim_url "$SIM_URL" pg_dsn "$PG_DSN" \
            admin_user admin admin_password "$password" airflow_home "$AIRFLOW_HOME" \
            push_url "$([ "$PUSH" = 1 ] && echo "$PUSH_URL")"
        mv "$IYS_READY_FILE.tmp" "$IYS_READY_FILE"
    fi
    cat >&2 <<EOF

  ┌────────────────────────────────────────────────────────────────────────────
  │ Airflow UI      $API_URL      login: admin / $password
  │ İYS simulator   $SIM_URL      (control API: $SIM_URL/__sim/counters)
  │ Push receiver   $([ "$PUSH" = 1 ] && echo "$PUSH_URL/iys-push/<conn_id>/<CHANNEL>" || echo "off (IYS_PUSH=0)")
  │ PostgreSQL      $PG_DSN
  │ AIRFLOW_HOME    $AIRFLOW_HOME
  │ Logs            $LOG_DIR
  │
  │ Trigger:  $CLI dags trigger iys_initial_sync
  │ (any airflow command works through $CLI; or: set -a; . $CLI_ENV; set +a; airflow …)
  │ Ctrl-C stops everything.
  └────────────────────────────────────────────────────────────────────────────

EOF
}

main() {
    [ -x "$PY" ] || die "no virtualenv at $VENV_BIN: run 'make install' first"
    start_simulator
    resolve_postgres
    configure_airflow
    prepare_metadata
    seed_demo_data
    start_push_receiver
    start_airflow
    register_push
    announce
    # Stay in the foreground until Ctrl-C, or until standalone dies on its own.
    while group_alive "${CHILD_PIDS[-1]}"; do sleep 1; done
    die "airflow standalone exited (see $LOG_DIR/airflow-standalone.log)"
}

# Sourced (tests/unit/test_local_cli_env.py), it only defines the functions; run, it starts the stack.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
