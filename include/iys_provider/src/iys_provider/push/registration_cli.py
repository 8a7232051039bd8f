"""``iys-push-registration``: register, list and unregister a brand's push receiver with İYS.

.. code-block:: bash

    iys-push-registration register   --conn-id iys_default --receiver-url https://push.example.com
    iys-push-registration list       --conn-id iys_default
    iys-push-registration unregister --conn-id iys_default --receiver-url https://old.example.com --channel MESAJ

The connection is read the way Airflow reads it (``AIRFLOW_CONN_*`` environment, the secrets
backend, the metadata database), so run it with the Airflow configuration of the workers. It
prints İYS's answer and codes on stdout, logs and errors on stderr, never a password. Exit
status: 0 done, 1 İYS refused or could not be reached (İYS's code printed), 2 bad arguments or
refused here before any change was sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, TextIO

# Nothing importing Airflow at module level: Airflow's log handlers bind to stdout when it is
# imported, and stdout is kept for the result (``--json`` is parsed by scripts).
from iys_provider.push.registration_rules import ACTIONS, CHANNELS

if TYPE_CHECKING:
    from iys_provider.push.registration import ChannelOutcome, PushRegistrationFailed, RegistrationResult

EXIT_OK = 0
EXIT_IYS_FAILED = 1
EXIT_REFUSED = 2


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="iys-push-registration",
        description="Register, list or unregister the brand's push receiver with İYS (one link per channel).",
    )
    cli.add_argument("action", choices=ACTIONS)
    cli.add_argument("--conn-id", default="iys_default", help="the brand's iys connection (default: iys_default)")
    cli.add_argument(
        "--receiver-url",
        help="the receiver's public https base URL; links are <URL>/iys-push/<conn-id>/<CHANNEL> "
        "(required for register and unregister)",
    )
    cli.add_argument(
        "--channel",
        action="append",
        choices=CHANNELS,
        help="a channel to act on; repeat for several (default: all three)",
    )
    cli.add_argument("--json", action="store_true", help="print the result as JSON")
    return cli


def main(argv: list[str] | None = None) -> int:
    out = sys.stdout
    cli = parser()
    args = cli.parse_args(argv)
    if args.action != "list" and not args.receiver_url:
        cli.error(f"{args.action} needs --receiver-url")
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, out, sys.stderr)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import requests
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

    from iys_provider.hooks.iys import IysHook
    from iys_provider.push.registration import PushRegistration, PushRegistrationFailed, PushRegistrationRefused

    hook = IysHook(iys_conn_id=args.conn_id)
    service = PushRegistration(hook)
    channels = args.channel or list(CHANNELS)
    try:
        if args.action == "list":
            result = service.list()
        elif args.action == "register":
            result = service.register(args.receiver_url, channels)
        else:
            result = service.unregister(args.receiver_url, channels)
    except PushRegistrationRefused as exc:
        print(str(exc), file=err)
        return EXIT_REFUSED
    except PushRegistrationFailed as exc:
        print(str(exc), file=err)
        if args.json:
            print(json.dumps(_failure(exc), ensure_ascii=False), file=out)
        else:
            for outcome in exc.done:
                _print_outcome(outcome, out)
        return EXIT_IYS_FAILED
    except AirflowNotFoundException as exc:
        print(f"No such connection: {exc}", file=err)
        return EXIT_REFUSED
    except (AirflowException, requests.RequestException) as exc:
        print(f"Failed: {exc}", file=err)
        return EXIT_IYS_FAILED
    finally:
        hook.close()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False), file=out)
    else:
        _print(result, out)
    return EXIT_OK


def _print(result: RegistrationResult, out: TextIO) -> None:
    for outcome in result.channels:
        _print_outcome(outcome, out)
    print(f"İYS lists {len(result.links)} push link(s) for {result.iys_conn_id} (brand {result.brand_code}):", file=out)
    for link in result.links:
        print(f"  {link.type!s:<7} {link.url}  {link.status or '-'}  {link.register_time or '-'}", file=out)


def _print_outcome(outcome: ChannelOutcome, out: TextIO) -> None:
    said = f"İYS: {outcome.message}" if outcome.outcome in ("registered", "unregistered") else outcome.message
    print(f"{outcome.channel:<7} {outcome.outcome:<19} {outcome.url}  {said}".rstrip(), file=out)


def _failure(exc: PushRegistrationFailed) -> dict:
    return {
        "failed": {"channel": exc.channel, "url": exc.url, "code": exc.code, "http_status": exc.status_code},
        "message": exc.iys_message,
        "done": [o.to_dict() for o in exc.done],
    }


if __name__ == "__main__":
    sys.exit(main())
