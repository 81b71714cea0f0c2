"""Canonical scalar values (scim/values.py): dateTimes of every year from 1 to 9999 at any
offset, and the lossless string forms of numbers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scimd.scim import schema as S
from scimd.scim.errors import InvalidValue
from scimd.scim.values import canonical_datetime, coerce_scalar

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
)


@given(INSTANTS)
def test_canonical_form_is_the_same_instant_in_fixed_width(dt: datetime) -> None:
    text = canonical_datetime(dt.isoformat())
    assert text is not None and len(text) == len("2024-01-02T03:04:05.000Z")
    back = datetime.fromisoformat(text)
    assert back == dt.replace(microsecond=dt.microsecond // 1000 * 1000)


@given(INSTANTS, INSTANTS)
def test_string_order_is_time_order(a: datetime, b: datetime) -> None:
    """Filters and sorting compare the stored strings (in SQL too)."""
    ta, tb = canonical_datetime(a.isoformat()), canonical_datetime(b.isoformat())
    assert ta is not None and tb is not None
    ms_a, ms_b = (x.replace(microsecond=x.microsecond // 1000 * 1000) for x in (a, b))
    assert (ta < tb) == (ms_a < ms_b) and (ta == tb) == (ms_a == ms_b)


def test_years_below_1000_are_padded_and_overflow_is_refused() -> None:
    assert canonical_datetime("0999-05-01T00:00:00Z") == "0999-05-01T00:00:00.000Z"
    assert canonical_datetime("0001-01-01T00:00:00") == "0001-01-01T00:00:00.000Z"
    assert canonical_datetime("0001-01-01T00:00:00+02:00") is None  # before year 1 in UTC
    assert canonical_datetime("9999-12-31T23:00:00-02:00") is None
    assert datetime.fromisoformat(canonical_datetime("2024-02-11T01:30:00+01:00") or "") == (
        datetime(2024, 2, 11, 0, 30, tzinfo=UTC)
    )


def _attr(t: str) -> Any:
    return S.Attribute("Prop", t)


def test_numbers_take_their_lossless_string_forms_and_say_what_is_wrong() -> None:
    i, d = _attr(S.INTEGER), _attr(S.DECIMAL)
    assert coerce_scalar(i, "+42", "p") == 42 and coerce_scalar(i, "-7", "p") == -7
    assert coerce_scalar(d, "+1.5", "p") == 1.5 and coerce_scalar(d, "0.1", "p") == 0.1
    with pytest.raises(InvalidValue, match=re.escape("out of -2^63..2^63-1")):
        coerce_scalar(i, 10**20, "p")
    for lossy in ("1234567890.123456789", "1.0000000000000001", "1e400", "1e-400"):
        with pytest.raises(InvalidValue, match="cannot be kept exactly"):
            coerce_scalar(d, lossy, "p")  # stored as 1234567890.1234567, 1, ...
    assert coerce_scalar(d, "5", "p") == 5 and coerce_scalar(d, "2.50", "p") == 2.5
    with pytest.raises(InvalidValue, match="must be an integer"):
        coerce_scalar(i, "4.5", "p")


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(2.0**63)
@example(2.0**64 - 2048)
@example(-(2.0**63))
@example(2.0**60)
def test_a_decimal_sent_as_the_shortest_text_of_a_double_is_kept_exactly(x: float) -> None:
    """As that double, or, for a whole one from -2^63 to 2^64, as the integer it is stored as
    (its exact value, or past 2^63 its shortest digits), which reads back as the double."""
    kept = coerce_scalar(_attr(S.DECIMAL), repr(x), "p")
    assert float(kept) == x
    if isinstance(kept, int):
        assert x.is_integer() and abs(x) >= 2**53 and -(2**63) <= kept < 2**64
        assert kept == x or kept == int(Decimal(repr(x)))


@pytest.mark.parametrize(
    "text", ["-10000000000000000000", "100000000000000000000", "-9223372036854776000"]
)
def test_a_decimal_past_64_bits_sent_as_text_is_stored_not_a_500(text: str) -> None:
    """Whole numbers that are a double's digits but past what JSON writes as an integer
    (outside -2^63..2^64) were kept as integers, and storing them failed (a 500)."""
    import orjson

    kept = coerce_scalar(_attr(S.DECIMAL), text, "p")
    assert float(kept) == float(text)
    assert orjson.loads(orjson.dumps({"v": kept}))["v"] == kept


def test_an_integer_sent_as_text_is_read_exactly_or_refused() -> None:
    """Integer text went through a double: "9007199254740993.0" was stored as ...992 and
    "1.0000000000000001" as 1. It is read exactly now, and a fraction is refused."""
    i = _attr(S.INTEGER)
    assert coerce_scalar(i, "9007199254740993.0", "p") == 9007199254740993
    assert coerce_scalar(i, "12345678901234567.0", "p") == 12345678901234567
    assert coerce_scalar(i, "1e3", "p") == 1000 and coerce_scalar(i, "0e5", "p") == 0
    for fraction in ("1.0000000000000001", "99999999999999999999e-2"):
        with pytest.raises(InvalidValue, match="must be an integer"):
            coerce_scalar(i, fraction, "p")
    for huge in ("9223372036854775808", "1e400"):
        with pytest.raises(InvalidValue, match=re.escape("out of -2^63..2^63-1")):
            coerce_scalar(i, huge, "p")
    with pytest.raises(InvalidValue, match="whole number, or as a string"):
        coerce_scalar(i, 9007199254740994.0, "p")  # a JSON number with a fraction: a double


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from(["", ".0", ".000"]))
def test_every_64_bit_integer_text_is_kept_exactly(n: int, tail: str) -> None:
    assert coerce_scalar(_attr(S.INTEGER), f"{n}{tail}", "p") == n


def test_a_negative_zero_decimal_is_zero_on_every_database() -> None:
    """PostgreSQL's jsonb reads -0.0 back as 0.0 while SQLite kept the sign: one value."""
    import math

    kept = coerce_scalar(_attr(S.DECIMAL), -0.0, "p")
    assert kept == 0.0 and math.copysign(1.0, kept) == 1.0


@pytest.mark.parametrize(
    ("text", "number"), [("2.0", 2.0), ("42", 42), ("-0.0", 0.0), ("4.2E1", 42.0), ("1e3", 1e3)]
)
def test_a_decimal_in_a_string_is_kept_as_the_same_json_number_is(text: str, number: Any) -> None:
    """RFC 7643 §2.3.3: "2.0" was stored and returned as 2, while the number 2.0 stayed 2.0."""
    kept = coerce_scalar(_attr(S.DECIMAL), text, "p")
    assert kept == number and type(kept) is type(number)
    assert type(coerce_scalar(_attr(S.DECIMAL), number, "p")) is type(number)


def test_instants_keep_nine_digits_and_finer_is_read_from_the_text() -> None:
    """dateTimes compare as UTC instants to the nanosecond; a literal finer than meta's
    millisecond is told from its text (Python's datetime read ".1230004" as ".123")."""
    from scimd.scim.filter import parse
    from scimd.scim.query import bind, matches
    from scimd.scim.values import finer_than_stored, instant

    assert instant("2026-11-29T16:26:59.1146867Z") == "2026-11-29T16:26:59.114686700Z"
    assert instant("2020-01-02T04:04:05.123456789+01:00") == "2020-01-02T03:04:05.123456789Z"
    assert instant("2020-01-02T03:04:05Z") == "2020-01-02T03:04:05.000000000Z"
    assert finer_than_stored("2020-01-02T03:04:05.1230004Z")
    assert not finer_than_stored("2020-01-02T03:04:05.1230000Z")
    rt = S.user_type()
    user = {"userName": "u", "meta": {"lastModified": "2020-01-02T03:04:05.123Z"}}
    for op, want in (("eq", False), ("lt", True), ("le", True), ("gt", False), ("ne", True)):
        f = bind(parse(f'meta.lastModified {op} "2020-01-02T03:04:05.1230004Z"'), rt)
        assert matches(f, user, rt) is want, op


@pytest.mark.parametrize(
    "literal",
    [
        "2020-01-01t10:00:00.5379Z",
        "2020-01-01 10:00:00.5379Z",
        "2020-01-01T10:00:00,5379Z",
        "20200101T100000.5379Z",
    ],
)
def test_a_finer_instant_is_read_in_every_form_a_datetime_takes(literal: str) -> None:
    """Only "T..:..:..." fractions were read past the millisecond: in the other forms the
    reader accepts (a "t", a space, a comma, no colons), meta.created eq a finer instant
    matched, and its lt did not."""
    from scimd.scim.filter import parse
    from scimd.scim.query import bind, matches
    from scimd.scim.values import finer_than_stored, instant

    assert finer_than_stored(literal)
    assert instant(literal) == "2020-01-01T10:00:00.537900000Z"
    rt = S.user_type()
    user = {"userName": "u", "meta": {"created": "2020-01-01T10:00:00.537Z"}}
    assert matches(bind(parse(f'meta.created lt "{literal}"'), rt), user, rt)
    assert not matches(bind(parse(f'meta.created eq "{literal}"'), rt), user, rt)


def test_refusals_say_what_is_wrong_with_a_value_of_the_right_type() -> None:
    """A dateTime its offset moves out of years 1-9999 was "not a dateTime"; a whole decimal
    past 64 bits was "not a decimal"."""
    with pytest.raises(InvalidValue, match="outside years 1-9999 once converted to UTC"):
        coerce_scalar(_attr(S.DATETIME), "0001-01-01T00:00:00+01:00", "p")
    with pytest.raises(InvalidValue, match="must be a dateTime"):
        coerce_scalar(_attr(S.DATETIME), "yesterday", "p")
    with pytest.raises(InvalidValue, match=re.escape("out of -2^63..2^63-1")):
        coerce_scalar(_attr(S.DECIMAL), 12345678901234567890, "p")


def test_numbers_too_long_or_rounded_on_their_way_are_refused_clearly() -> None:
    """Text of more digits than int() converts was a ValueError (a 500); -2^63-1 as a JSON
    integer arrived as a double rounded to -2^63, which was stored."""
    import orjson

    for t in (S.INTEGER, S.DECIMAL):
        with pytest.raises(InvalidValue, match=r"must be an? "):
            coerce_scalar(_attr(t), "1" + "0" * 5000, "p")
    with pytest.raises(InvalidValue, match="may have been rounded"):
        coerce_scalar(_attr(S.INTEGER), orjson.loads("-9223372036854775809"), "p")


def test_the_datetime_forms_clients_send_are_read_and_odd_ones_refused() -> None:
    """Python's parser took other scripts' digits, junk after a fraction's sixth digit and
    an offset minute of 60; the forms clients send (Entra's seven digits, .NET, Okta, Java's
    +0000, Ruby's space before the offset, an offset with seconds) still read."""
    for text, utc in (
        ("2026-11-29T16:26:59.1146867Z", "2026-11-29T16:26:59.114Z"),
        ("2026-11-29T16:26:59.1146867+01:00", "2026-11-29T15:26:59.114Z"),
        ("2026-11-29T16:26:59.000Z", "2026-11-29T16:26:59.000Z"),
        ("2026-11-29T16:26:59+0000", "2026-11-29T16:26:59.000Z"),
        ("2026-11-29 16:26:59 +0100", "2026-11-29T15:26:59.000Z"),
        ("2026-11-29T16:26:59,5Z", "2026-11-29T16:26:59.500Z"),
        ("2026-11-29T16:26:59+05:30:00", "2026-11-29T10:56:59.000Z"),
        ("2026-11-29T16:26:59+20:00", "2026-11-28T20:26:59.000Z"),
        ("2026-11-29", "2026-11-29T00:00:00.000Z"),
        ("2026-11-29t16:26:59z", "2026-11-29T16:26:59.000Z"),  # RFC 3339 §5.6: either case
        ("2026-11-29T16:26:59.1234567z", "2026-11-29T16:26:59.123Z"),
    ):
        assert canonical_datetime(text) == utc, text
    for text in (
        "2026-11-29T16:26:59+00:60",
        "2026-11-29T16:26:59.1234567xZ",
        "2026-11-29T16:26:59.123456\u0663Z",
        "\uff12026-11-29T16:26:59Z",
        "2026-11-29T16:26:59+24:00",
    ):
        assert canonical_datetime(text) is None, text


def test_a_lower_case_z_reads_as_utc_in_values_and_filters() -> None:
    """RFC 3339 §5.6 allows "z"; Python 3.11's parser refused it, so a DateTime property or a
    meta filter ending in one was a 400 "must be a dateTime"."""
    from scimd.scim.filter import parse
    from scimd.scim.query import bind, matches
    from scimd.scim.values import instant

    assert coerce_scalar(_attr(S.DATETIME), "2026-11-01T04:00:00z", "p") == (
        "2026-11-01T04:00:00.000Z"
    )
    assert instant("2026-11-01T04:00:00.5z") == "2026-11-01T04:00:00.500000000Z"
    rt = S.user_type()
    user = {"userName": "u", "meta": {"created": "2026-11-01T04:00:00.000Z"}}
    assert matches(bind(parse('meta.created eq "2026-11-01T04:00:00z"'), rt), user, rt)


def test_an_offset_whose_plus_became_a_space_is_explained() -> None:
    """Form decoding reads an unencoded "+" in a query string as a space; the 400 showed the
    value with a space and said only that it was not a dateTime."""
    from scimd.scim.errors import InvalidFilter
    from scimd.scim.filter import parse
    from scimd.scim.query import bind

    rt = S.user_type()
    with pytest.raises(InvalidFilter, match=re.escape("write the offset as %2B05:45")):
        bind(parse('meta.lastModified gt "2026-01-01T00:00:00 05:45"'), rt)
    with pytest.raises(InvalidFilter) as refused:
        bind(parse('meta.lastModified gt "yesterday 05:45"'), rt)
    assert "%2B" not in refused.value.detail


def test_a_datetime_in_another_form_keeps_every_digit_of_its_second() -> None:
    """A DateTime value not in RFC 3339's form (no offset, as .NET's round-trip format; a "t";
    a space) was stored in UTC cut to the millisecond: it no longer equalled the text sent
    (a filter for it found nothing) and could sort after a later instant."""
    from scimd.scim.values import instant

    dt = _attr(S.DATETIME)
    for sent, stored in (
        ("2026-01-05T10:00:00.1234567", "2026-01-05T10:00:00.1234567Z"),
        ("2026-01-05t10:00:00.1234567z", "2026-01-05T10:00:00.1234567Z"),
        ("2026-01-05 12:00:00.123456789+0200", "2026-01-05T10:00:00.123456789Z"),
        ("2026-01-05T10:00:00.9999", "2026-01-05T10:00:00.9999Z"),
        ("2026-01-05T10:00:00.5", "2026-01-05T10:00:00.500Z"),
        ("2026-01-05T10:00:00", "2026-01-05T10:00:00.000Z"),
        ("2026-01-05T10:00:00.1234567000000Z", "2026-01-05T10:00:00.1234567Z"),
        ("2026-01-05T10:00:00.1234567Z", "2026-01-05T10:00:00.1234567Z"),  # RFC 3339: as sent
    ):
        got = coerce_scalar(dt, sent, "p")
        assert got == stored, sent
        assert instant(got) == instant(sent), sent
        assert coerce_scalar(dt, got, "p") == got  # a PUT of what a GET returned changes nothing
    assert instant(coerce_scalar(dt, "2026-01-05T10:00:00.9999", "p")) > instant(
        "2026-01-05T10:00:00.9995Z"
    )
    for finer in ("2026-01-05T10:00:00.1234567891Z", "2026-01-05T10:00:00.0000000001"):
        with pytest.raises(InvalidValue, match="more than 9 digits of a second"):
            coerce_scalar(dt, finer, "p")
    with pytest.raises(InvalidValue, match=r"dateTime \(ISO 8601, such as"):
        coerce_scalar(dt, "1/5/2026 10:00:00 AM", "p")


def test_filters_on_datetime_properties_compare_what_was_stored() -> None:
    """The text a value was sent as finds it; a literal finer than the nanosecond is refused
    for a property (it was cut to 9 digits: ``eq`` matched a value it differs from) but still
    compared exactly for meta's values."""
    from scimd.scim.errors import InvalidFilter
    from scimd.scim.filter import parse
    from scimd.scim.query import bind, matches

    urn = S.USER_PROPERTIES_SCHEMA
    rt = S.user_type([S.PropertyDef("Dt", "DateTime")])
    sent = "2026-01-05T10:00:00.1234567"
    doc = {"userName": "a", urn: {"Dt": coerce_scalar(_attr(S.DATETIME), sent, "p")}}
    assert matches(bind(parse(f'{urn}:Dt eq "{sent}"'), rt), doc, rt)
    assert not matches(bind(parse(f'{urn}:Dt gt "{sent}"'), rt), doc, rt)
    with pytest.raises(InvalidFilter, match="more than 9 digits"):
        bind(parse(f'{urn}:Dt eq "2026-01-05T10:00:00.1234567001Z"'), rt)
    meta = {"meta": {"lastModified": "2026-01-05T10:00:00.123Z"}}
    assert not matches(
        bind(parse('meta.lastModified eq "2026-01-05T10:00:00.1230000001Z"'), rt), meta, rt
    )
    assert matches(
        bind(parse('meta.lastModified lt "2026-01-05T10:00:00.1230000001Z"'), rt), meta, rt
    )


def test_a_number_too_small_for_a_double_is_refused_in_a_filter() -> None:
    """``1e-400`` became 0: ``Dec lt 1e-400`` left out a 0, ``Dec eq 1e-400`` matched it
    (``1e400`` was already a 400)."""
    from scimd.scim.errors import InvalidFilter
    from scimd.scim.filter import parse

    for text in ("1e-400", "-1.5E-999", "0.00001e-400"):
        with pytest.raises(InvalidFilter, match="out of range"):
            parse(f"title eq {text}")
    for zero in ("0e-400", "0.0", "-0.0e5", "0E1"):
        parse(f"title eq {zero}")


def test_last_modified_never_goes_back_in_time() -> None:
    """Taken from each process's clock, a write through a server whose clock was behind gave
    a resource a lastModified before the one it had (even before its created)."""
    from scimd.scim.values import later_than, now_datetime

    ahead = "2999-01-01T00:00:00.999Z"
    assert later_than(ahead) == "2999-01-01T00:00:01.000Z"
    assert later_than(None) <= now_datetime()
    past = "2000-01-01T00:00:00.000Z"
    assert later_than(past) > past
    assert later_than("not a time") <= now_datetime()


def test_errors_show_values_as_json_writes_them() -> None:
    """From an audit: errors said "got True", "got None", "got dict" (Python's words) and
    echoed 1e308 given for an Integer as its 309 digits."""
    i = S.Attribute("p", S.INTEGER)
    s = S.Attribute("p", S.STRING)
    for attr, value, shown in (
        (s, True, "got true"),
        (s, None, "got null"),
        (s, {"a": 1}, "got an object"),
        (s, [1], "got an array"),
        (i, "x" * 100, "got '" + "x" * 56 + "...'"),
    ):
        with pytest.raises(InvalidValue) as e:
            coerce_scalar(attr, value, "p")
        assert e.value.detail.endswith(shown), (value, e.value.detail)
    with pytest.raises(InvalidValue) as e:
        coerce_scalar(i, 1e308, "p")
    assert "got 1e+308: out of -2^63..2^63-1" in e.value.detail and len(e.value.detail) < 80


def test_a_date_is_trimmed_as_the_other_types_are() -> None:
    """A date sent as " 2020-01-01" was the one value refused for its spaces: " 42 " and a
    dateTime with spaces were read."""
    d = S.Attribute("Prop", S.STRING, value_format="date")
    assert coerce_scalar(d, " 2020-01-01 ", "p") == "2020-01-01"
    with pytest.raises(InvalidValue, match="must be a date"):
        coerce_scalar(d, " 2020-02-30", "p")


def test_a_leap_second_is_said_to_be_one() -> None:
    """RFC 3339 allows second 60: refused as "not a dateTime (ISO 8601 ...)", a client was told
    its valid timestamp was malformed."""
    with pytest.raises(InvalidValue, match="is a leap second, which scimd does not keep"):
        coerce_scalar(_attr(S.DATETIME), "2016-12-31T23:59:60Z", "p")
    with pytest.raises(InvalidValue, match="must be a dateTime"):
        coerce_scalar(_attr(S.DATETIME), "2016-12-31T23:59:61Z", "p")


def test_a_whole_number_a_decimal_cannot_keep_names_the_double_it_may_send() -> None:
    """The advice was "send it with a fraction or an exponent", and 9223372036854775808.0 was
    refused in turn: the advice names the digits that are kept."""
    d = _attr(S.DECIMAL)
    with pytest.raises(InvalidValue, match=re.escape("send 9.223372036854776e+18")):
        coerce_scalar(d, 9223372036854775808, "p")
    assert coerce_scalar(d, "9.223372036854776e+18", "p") == 9223372036854776000
    with pytest.raises(InvalidValue, match=re.escape("got 10000000000000000000... (401 digits)")):
        coerce_scalar(d, 10**400, "p")


def test_a_binary_value_must_be_base64() -> None:
    """RFC 7643 §2.3.6: binary is base64; characters outside its alphabet (a certificate pasted
    with stray symbols) are refused, not stored for clients to fail decoding later."""
    b = _attr(S.BINARY)
    assert coerce_scalar(b, "TUlJ", "p") == "TUlJ"
    for bad in ("MII*not$base64==", "TU lJ", "TUlJ!"):
        with pytest.raises(InvalidValue, match="must be"):
            coerce_scalar(b, bad, "p")


def test_a_padded_boolean_string_is_read_as_the_boolean() -> None:
    """Entra sends ``active`` as "True"/"False", sometimes with spaces around it: " False " must
    read as false (a padded string refused, or read as true, would break deprovisioning)."""
    b = _attr(S.BOOLEAN)
    assert coerce_scalar(b, " False ", "p") is False
    assert coerce_scalar(b, "\tTRUE ", "p") is True
    with pytest.raises(InvalidValue):
        coerce_scalar(b, " no ", "p")


def test_numbers_with_leading_zeros_are_refused() -> None:
    """JSON writes no leading zeros: "007" (an id, a zip code) sent for a number is not
    silently stored as 7, for an Integer or a Decimal."""
    i, d = _attr(S.INTEGER), _attr(S.DECIMAL)
    assert coerce_scalar(i, "0", "p") == 0 and coerce_scalar(d, "0.5", "p") == 0.5
    for attr, text in ((i, "007"), (i, "-01"), (i, "00"), (d, "00.5"), (d, "-01.5")):
        with pytest.raises(InvalidValue):
            coerce_scalar(attr, text, "p")


def test_last_modified_moves_on_when_the_clock_reads_the_same_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two writes in one millisecond: the second's lastModified must be later than the first's,
    or ``meta.lastModified gt`` and version checks miss the second write."""
    from scimd.scim import values

    t = "2024-05-06T07:08:09.123Z"
    monkeypatch.setattr(values, "now_datetime", lambda: t)
    assert values.later_than(t) == "2024-05-06T07:08:09.124Z"
    assert values.later_than("2024-05-06T07:08:09.122Z") == t


def test_a_boolean_is_no_integer() -> None:
    """JSON's true is not the number 1: an Integer property given true is refused, not
    stored as 1 (a filter for 1 would then find a user whose client sent a boolean)."""
    for value in (True, False):
        with pytest.raises(InvalidValue, match=r"must be an integer, got (true|false)"):
            coerce_scalar(_attr(S.INTEGER), value, "p")


def test_the_64_bit_bounds_are_both_integers() -> None:
    """-2^63 and 2^63-1 are the Integer range PostgreSQL's bigint and SQLite's integer hold:
    both ends are kept."""
    i = _attr(S.INTEGER)
    assert coerce_scalar(i, -(2**63), "p") == -(2**63)
    assert coerce_scalar(i, str(-(2**63)), "p") == -(2**63)
    assert coerce_scalar(i, 2**63 - 1, "p") == 2**63 - 1
