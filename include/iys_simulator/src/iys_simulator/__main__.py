"""Command line: ``python -m iys_simulator --port 8099``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from .config import UNKNOWN_STATUS_MODES, parse_brand_codes
from .server import SimulatorServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iys_simulator", description="Local İYS API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo-secret")
    parser.add_argument("--iys-code", type=int, default=700001)
    parser.add_argument("--brand-code", action="append", default=[], help="repeatable or comma separated")
    parser.add_argument(
        "--extra-account",
        action="append",
        default=[],
        type=json.loads,
        metavar="JSON",
        help='another API user on the same server, repeatable: \'{"username": "b", "password": "p", '
        '"iys_code": 700100, "brand_codes": [700100]}\'',
    )
    parser.add_argument("--seed-file", help="JSON list of consents (or {'consents': [...]}) loaded at start")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--rate-limit", type=int, default=10, help="requests per second per IP")
    parser.add_argument("--token-limit-per-hour", type=int, default=10)
    parser.add_argument("--token-block-seconds", type=float, default=3600)
    parser.add_argument("--access-ttl", type=int, default=7200)
    parser.add_argument("--refresh-ttl", type=int, default=14400)
    parser.add_argument("--batch-result-delay", type=float, default=300)
    parser.add_argument("--single-status-limit-per-hour", type=int, default=1000)
    parser.add_argument("--unknown-status-mode", choices=UNKNOWN_STATUS_MODES, default="404")
    parser.add_argument("--unknown-status-code", default="H114", help="error code of --unknown-status-mode 422")
    parser.add_argument("--no-retry-after", action="store_true", help="omit Retry-After on H124")
    parser.add_argument("--push-timeout-seconds", type=float, default=5, help="push link check and delivery timeout")
    parser.add_argument("--push-retry-seconds", type=float, default=1, help="first retry delay of a failed push")
    parser.add_argument("--push-ca-file", default=None, help="PEM CA file to verify push receivers (default: system)")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and fault draws")
    parser.add_argument("--verbose", action="store_true", help="log requests (personal data masked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    sim = SimulatorServer(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        iys_code=args.iys_code,
        brand_codes=parse_brand_codes(args.brand_code),
        extra_accounts=args.extra_account,
        latency_ms=args.latency_ms,
        rate_limit_per_second=args.rate_limit,
        token_limit_per_hour=args.token_limit_per_hour,
        token_block_seconds=args.token_block_seconds,
        access_ttl=args.access_ttl,
        refresh_ttl=args.refresh_ttl,
        batch_result_delay=args.batch_result_delay,
        single_status_limit_per_hour=args.single_status_limit_per_hour,
        unknown_status_mode=args.unknown_status_mode,
        unknown_status_code=args.unknown_status_code,
        retry_after_header=not args.no_retry_after,
        push_timeout_seconds=args.push_timeout_seconds,
        push_retry_seconds=args.push_retry_seconds,
        push_ca_file=args.push_ca_file,
        seed=args.seed,
        verbose=args.verbose,
    )
    if args.seed_file:
        with open(args.seed_file, encoding="utf-8") as handle:
            data = json.load(handle)
        consents = data["consents"] if isinstance(data, dict) else data
        sim.seed(consents, emit_events=bool(isinstance(data, dict) and data.get("emit_events")))

    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    sim.start()
    print(f"İYS simulator listening on {sim.url}", flush=True)
    while not stopped.wait(0.2):  # short waits so the signal handler runs promptly
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
