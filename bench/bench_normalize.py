"""Throughput of recipient normalisation: one phone + one e-mail per synthetic user.

Run from the repo root:
    PYTHONPATH=include/iys_provider/src .venv/bin/python bench/bench_normalize.py [rows]

The rows mimic a messy user table: mostly Turkish mobiles in a dozen spellings, plus
landlines, foreign numbers, ``+9005…`` forms, Excel floats, blanks and garbage, and
e-mails with mixed case, padding, Turkish letters and broken shapes. Prints users/s on
one core and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import time

from bench_support import add_results_argument, write_results

from iys_provider.normalize import normalize_email, normalize_phone

DEFAULT_ROWS = 200_000
OPERATOR_PREFIXES = ("530", "532", "533", "535", "536", "541", "542", "544", "505", "506", "552", "555")


def _mobile_national(rng: random.Random) -> str:
    return rng.choice(OPERATOR_PREFIXES) + f"{rng.randrange(10**7):07d}"


def _spelled_mobile(rng: random.Random) -> object:
    n = _mobile_national(rng)
    spellings = (
        n,
        "0" + n,
        "90" + n,
        "+90" + n,
        f"0{n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
        f"+90 ({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
        f"0090 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
        f"  0{n}\t",
        f"\u00a0{n[:3]}.{n[3:6]}.{n[6:8]}.{n[8:]}",
        f"0{n[:3]}/{n[3:]}",
        f"{n}.0",
        int("90" + n),
        float(n),
    )
    return rng.choice(spellings)


def _phone(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.85:
        return _spelled_mobile(rng)
    if roll < 0.88:
        return f"0212 {rng.randrange(1000):03d} {rng.randrange(100):02d} {rng.randrange(100):02d}"
    if roll < 0.90:
        return f"+44 7911 {rng.randrange(10**6):06d}"
    if roll < 0.92:
        return "+900" + _mobile_national(rng)
    if roll < 0.96:
        return rng.choice((None, "", "   ", float("nan")))
    return rng.choice(("yok", "-", "0532 123", _mobile_national(rng) + "99", "tel: bilinmiyor"))


def _email(rng: random.Random, i: int) -> object:
    local = rng.choice(("ahmet", "ayse.yilmaz", "m.kaya", "user", "info", "test_user")) + str(i)
    domain = rng.choice(("gmail.com", "hotmail.com", "yahoo.com.tr", "example.com.tr", "outlook.com"))
    roll = rng.random()
    if roll < 0.80:
        return rng.choice((f"{local}@{domain}", f"{local.title()}@{domain.upper()}", f"  {local}+promo@{domain} "))
    if roll < 0.84:
        return rng.choice(("şule@gmail.com", "AYŞE@HOTMAIL.COM", "gökhan.öz@firma.com.tr"))
    if roll < 0.90:
        return rng.choice((None, "", " "))
    return rng.choice((f"{local} @{domain}", f"{local}@{domain.split('.')[0]}", "a@b.c", f"{local}@@{domain}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=DEFAULT_ROWS, help="users to normalise")
    add_results_argument(parser, "normalize")
    args = parser.parse_args()
    rows = args.rows
    rng = random.Random(20240601)
    users = [(_phone(rng), _email(rng, i)) for i in range(rows)]

    # Warm regex and phonenumbers caches so the number reflects the steady state.
    for phone, email in users[:1000]:
        normalize_phone(phone)
        normalize_email(email)

    outcomes: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    for phone, email in users:
        phone_result = normalize_phone(phone)
        email_result = normalize_email(email)
        outcomes[phone_result.reason.value if phone_result.reason else "PHONE_OK"] += 1
        outcomes[email_result.reason.value if email_result.reason else "EMAIL_OK"] += 1
    elapsed = time.perf_counter() - start

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"rows={rows} elapsed={elapsed:.3f}s users/s={rows / elapsed:,.0f} peak_rss={peak_rss_mib:.1f} MiB")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:<22} {count}")
    figures = {"rows": rows, "seconds": elapsed, "users_per_s": rows / elapsed, "peak_rss_mib": peak_rss_mib}
    write_results(args, "normalize", {**figures, "outcomes": dict(sorted(outcomes.items()))})


if __name__ == "__main__":
    main()
