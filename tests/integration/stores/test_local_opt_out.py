"""The user's own "no" counts at once: an open RET in the outbox keeps its address out of ``iys.sendable``.

The outbox holds recipients as the application wrote them; the view matches them through
``iys.outbox_recipient_key`` (SQL), which must give every address the Python normaliser accepts
the same form. Expected addresses come from the numbers the tests build, not from the normaliser.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.schema import migrate

EXAMPLES = int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000"))
BRAND = 700001
ALICE_PHONE, ALICE_EMAIL = "+905321110001", "alice@example.com"


@pytest.fixture(scope="module")
def schema(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS iys CASCADE")
        migrate(conn)
        yield conn
        conn.execute("DROP SCHEMA IF EXISTS iys CASCADE")


def sql_key(conn, type_: str, recipient: str) -> str | None:
    return conn.execute("SELECT iys.outbox_recipient_key(%s, %s)", (type_, recipient)).fetchone()[0]


# --------------------------------------------------------------------------- the SQL normaliser

# Python's str.isspace() below U+3001, the invisible characters, and the separators between digits.
BLANKS = [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
SEPARATORS = [*BLANKS, ".", "-", "/", "(", ")", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212"]


@st.composite
def written_phones(draw) -> tuple[str, str]:
    """A Turkish mobile as people and spreadsheets write it, and the number it is (built, not normalised)."""
    national = "5" + draw(st.text("0123456789", min_size=9, max_size=9))
    prefix = draw(st.sampled_from(["", "0", "90", "+90", "0090"]))
    digits = prefix + national
    out = []
    for ch in digits:
        out.append(ch)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.text(st.sampled_from(SEPARATORS), min_size=1, max_size=2)))
    text = "".join(out)
    if draw(st.booleans()) and all(s not in text for s in SEPARATORS):
        text += draw(st.sampled_from([".0", ".00"]))
    pad = st.text(st.sampled_from(BLANKS), max_size=2)
    return draw(pad) + text + draw(pad), "+90" + national


@settings(max_examples=EXAMPLES, deadline=None)
@given(written=written_phones())
def test_every_phone_the_normaliser_accepts_gets_its_form_in_sql(schema, written):
    raw, number = written
    python = normalize_phone(raw).value
    if python is not None:
        assert python == number  # the generator's own truth
        assert sql_key(schema, "MESAJ", raw) == number
        assert sql_key(schema, " arama", raw) == number


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    raw=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
)  # Postgres text holds no NUL
def test_any_text_the_normaliser_accepts_as_a_phone_matches_in_sql(schema, raw):
    python = normalize_phone(raw).value
    key = sql_key(schema, "MESAJ", raw)
    if python is not None:
        assert key == python
    # A key where the normaliser refuses is harmless (no user holds that address), never a wrong
    # form: it is always +90 and ten digits.
    assert key is None or (key.startswith("+90") and len(key) == 13 and key[1:].isdigit())


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    local=st.from_regex(r"[a-zA-Z0-9_+-]{1,12}(\.[a-zA-Z0-9_+-]{1,6})?", fullmatch=True),
    domain=st.from_regex(r"[a-zA-Z0-9]{1,10}\.[a-zA-Z]{2,5}", fullmatch=True),
    before=st.text(st.sampled_from(BLANKS), max_size=2),
    after=st.text(st.sampled_from(BLANKS), max_size=2),
)
def test_every_email_the_normaliser_accepts_gets_its_form_in_sql(schema, local, domain, before, after):
    raw = f"{before}{local}@{domain}{after}"
    expected = f"{local}@{domain}".lower()
    python = normalize_email(raw).value
    if python is not None:
        assert python == expected
        assert sql_key(schema, "EPOSTA", raw) == expected


def test_each_separator_the_normaliser_drops_is_dropped_in_sql(schema):
    for separator in SEPARATORS:
        raw = f"0532{separator}111{separator}00{separator}01"
        assert normalize_phone(raw).value == ALICE_PHONE, repr(separator)
        assert sql_key(schema, "MESAJ", raw) == ALICE_PHONE, repr(separator)
    assert sql_key(schema, "MESAJ", "0532 111 00 01 x") is None
    assert sql_key(schema, "MESAJ", "9005321110001") is None  # the 9005 form İYS would store uselessly
    assert sql_key(schema, "SMS", "05321110001") is None  # not an İYS channel


# --------------------------------------------------------------------------- the view


@pytest.fixture
def world(schema):
    """Alice holds a phone and an e-mail, ONAY on all three channels since a week."""
    conn = schema
    for table in ("consent_updates", "consents", "user_recipients"):
        conn.execute(f"TRUNCATE iys.{table}")
    week_ago = datetime.now(UTC) - timedelta(days=7)
    conn.execute(
        "INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient, recipient_type) VALUES "
        "(%s, 'alice', 'phone', %s, 'BIREYSEL'), (%s, 'alice', 'email', %s, 'BIREYSEL')",
        (BRAND, ALICE_PHONE, BRAND, ALICE_EMAIL),
    )
    for recipient, type_ in ((ALICE_PHONE, "MESAJ"), (ALICE_PHONE, "ARAMA"), (ALICE_EMAIL, "EPOSTA")):
        conn.execute(
            "INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, consent_date, source) "
            "VALUES (%s, %s, 'BIREYSEL', %s, 'ONAY', %s, 'HS_WEB')",
            (BRAND, recipient, type_, week_ago),
        )
    return conn


def sendable(conn) -> set[str]:
    return {t for (t,) in conn.execute("SELECT type FROM iys.sendable WHERE user_id = 'alice'")}


def add(conn, recipient, type_, status="RET", *, state="pending", when=None, error_code=None, brand=BRAND) -> int:
    return conn.execute(
        "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, error_code) "
        "VALUES (%s, %s, %s, %s, %s, 'HS_MOBIL', %s, %s) RETURNING id",
        (brand, recipient, type_, status, when or datetime.now(UTC) - timedelta(minutes=5), state, error_code),
    ).fetchone()[0]


def test_an_open_ret_in_any_written_form_takes_only_its_channel_out(world):
    assert sendable(world) == {"MESAJ", "ARAMA", "EPOSTA"}
    add(world, "0532 111 00 01", "mesaj")
    assert sendable(world) == {"ARAMA", "EPOSTA"}
    add(world, "  Alice@Example.COM ", "EPOSTA")
    assert sendable(world) == {"ARAMA"}


@pytest.mark.parametrize(
    ("state", "error_code", "blocks"),
    [
        ("pending", None, True),
        ("held", None, True),
        ("submitted", None, True),
        ("failed", "H192", True),
        ("rejected", "EXPIRED", True),  # too late for İYS; the citizen still said no
        ("sent", None, False),  # our copy says RET once İYS confirmed it
        ("skipped", "OLDER_THAN_IYS", False),  # İYS holds a newer word
        ("skipped", "NOT_ONAY_IN_IYS", False),
        ("rejected", "INVALID_SOURCE", False),
    ],
)
def test_which_outbox_states_keep_the_address_out(world, state, error_code, blocks):
    add(world, ALICE_PHONE, "MESAJ", state=state, error_code=error_code)
    assert ("MESAJ" not in sendable(world)) is blocks


def test_an_onay_an_other_brand_or_an_older_ret_blocks_nothing(world):
    add(world, ALICE_PHONE, "MESAJ", status="ONAY")
    add(world, ALICE_PHONE, "MESAJ", brand=700002)
    # The citizen re-consented through İYS after the app's RET: İYS's newer word wins.
    add(world, ALICE_PHONE, "ARAMA", when=datetime.now(UTC) - timedelta(days=8))
    assert sendable(world) == {"MESAJ", "ARAMA", "EPOSTA"}
    add(world, ALICE_PHONE, "ARAMA", when=datetime.now(UTC) - timedelta(days=7))  # same second: still no
    assert sendable(world) == {"MESAJ", "EPOSTA"}


def test_the_ret_counts_from_its_commit_not_before(world, pg_dsn):
    with psycopg.connect(pg_dsn) as app:  # the brand's application, in its own transaction
        add(app, "0532 111 00 01", "MESAJ")
        assert "MESAJ" in sendable(world)
        app.commit()
    assert "MESAJ" not in sendable(world)
