"""Checking and canonicalising scalar values by attribute type (RFC 7643 §2.3).

Values are stored as sent, except for the type canonicalisations here: lossless string forms of
booleans and numbers become JSON booleans and numbers (Entra sends ``"False"`` and ``"42"``), and
dateTimes not in RFC 3339's form become UTC ``YYYY-MM-DDTHH:MM:SS.fff[ffffff]Z``; filters and
sorting compare dateTimes as ``instant``s, in memory and in SQL alike.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from scimd.scim import schema as S
from scimd.scim.compat import boolean_from_string, number_from_string
from scimd.scim.errors import InvalidValue
from scimd.scim.filter import NUL_IN_TEXT

_INT_MAX = 2**63 - 1


# The ISO 8601 dateTimes scimd reads, in ASCII digits: Python's fromisoformat also took other
# scripts' digits and ignored whatever followed a fraction's sixth digit ("00.1234567xZ"), and
# stored such a text as sent; PostgreSQL's filters, whose \d is ASCII, then disagreed with
# SQLite's. Offsets: hours 00-23 and minutes 00-59 (RFC 3339 §5.6; Python read "+00:60" as an
# hour).
_ISO_DATETIME = re.compile(
    r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}"
    r"([Tt ][0-9]{2}(:?[0-9]{2}(:?[0-9]{2}([.,][0-9]+)?)?)?"
    r" ?([Zz]|[+-](0[0-9]|1[0-9]|2[0-3])(:?[0-5][0-9](:?[0-5][0-9](\.[0-9]+)?)?)?)?)?"
)


def _parse(text: str) -> datetime:
    """``datetime.fromisoformat`` of what _ISO_DATETIME reads; ValueError otherwise. A final
    lower-case "z", which RFC 3339 §5.6 allows, is read too (Python 3.11's parser refuses it)."""
    text = text.strip()
    if not _ISO_DATETIME.fullmatch(text):
        raise ValueError(text)
    return datetime.fromisoformat(text[:-1] + "Z" if text.endswith("z") else text)


def _utc(text: str) -> datetime | None:
    """An ISO 8601 dateTime in UTC (naive values are taken as UTC); None if it is not one, or
    if its offset moves it out of years 1-9999 (OverflowError)."""
    try:
        dt = _parse(text)
        return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


def fold(text: str) -> str:
    """A string as compared without case (``caseExact`` false, RFC 7643 §2.2): ``str.lower()``,
    with the final sigma (U+03C2) as the other small sigma (U+03C3). lower() writes a capital
    sigma as the final one at the end of a word only, so "ΑΣ" did not start "ΑΣΒ": ``sw``,
    ``ew`` and ``co`` missed substrings that even a case-sensitive comparison finds. ``store``
    folds the same way in SQL and in its lower-cased columns."""
    return text.lower().replace(FINAL_SIGMA, SIGMA)


def canonical_datetime(value: str) -> str | None:
    """Parse an ISO 8601 / RFC 3339 dateTime; naive values are taken as UTC."""
    dt = _utc(value)
    return None if dt is None else _format(dt)


# RFC 3339's date-time, with seconds and an offset: a form every client and PostgreSQL read
# the same way. A DateTime value sent in it is kept as sent; other ISO 8601 forms are stored
# in UTC with the digits of the second they were sent with (a value without an offset is
# taken as UTC). ``store.sqlfilter``
# casts only texts of this form.
# Offsets kept as sent are those PostgreSQL casts (up to 15:59): a value sent at +20:00, which
# RFC 3339 allows, was stored as sent, and every filter and sort on its property was then a
# 500 there ("time zone displacement out of range"); it is stored in UTC now.
RFC3339 = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-](0[0-9]|1[0-5]):[0-5][0-9])"
)
_RFC3339 = re.compile(RFC3339)
# The fraction of a dateTime's seconds, as written, in every form _ISO_DATETIME reads (a "t"
# or a space, no colons, a comma): only "T..:..:..." was, and the others lost their digits
# past the millisecond (meta.created eq a finer instant then matched).
_FRACTION = re.compile(r"[Tt ][0-9]{2}:?[0-9]{2}:?[0-9]{2}[.,]([0-9]+)")


def instant(value: Any) -> str | None:
    """The comparable form of a stored or literal dateTime: UTC, to the nanosecond, one fixed
    width (``YYYY-MM-DDTHH:MM:SS.fffffffffZ``), so that text order is time order; None if
    ``value`` is not one. Values are stored as sent, so filters and sorting compare these.
    (Python's datetime keeps microseconds; digits 7 to 9, which .NET and Logic Apps send and
    no offset changes, are taken from the text.)"""
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _FRACTION.search(text)
    digits = m.group(1) if m else ""
    if m is not None and len(digits) > 6:
        text = text[: m.start(1) + 6] + text[m.end(1) :]
    dt = _utc(text)
    return None if dt is None else _format(dt, f"{dt.microsecond:06d}{digits[6:9]:0<3}")


def finer_than_stored(value: str) -> bool:
    """Whether a dateTime literal has digits past the millisecond, which meta's values (and
    ``canonical_datetime``) do not keep: comparisons with it must not simply drop them. Read
    from the text: Python keeps six digits, so ``.1230004`` looked like ``.123``."""
    m = _FRACTION.search(value)
    return bool(m and m.group(1)[3:].strip("0"))


def _is_iso(value: str) -> bool:
    try:
        _parse(value)
    except ValueError:
        return False
    return True


def now_datetime() -> str:
    return _format(datetime.now(UTC))


def later_than(previous: str | None) -> str:
    """``meta.lastModified`` for a write over a resource last modified at ``previous``: now,
    or a millisecond past ``previous`` if the clock reads no later (two servers on one
    database whose clocks differ, or a clock set back): the time was taken from each
    process's clock as it stood, and a PATCH through a server 2 s behind gave a user a
    lastModified before its created, which ``meta.lastModified gt`` then missed."""
    now = now_datetime()
    if previous is None or now > previous:
        return now
    try:
        return _format(datetime.fromisoformat(previous) + timedelta(milliseconds=1))
    except (ValueError, OverflowError):  # not one scimd wrote: leave it to the clock
        return now


def _format(dt: datetime, fraction: str | None = None) -> str:
    # Not strftime: its %Y does not pad years below 1000 (.NET's DateTime.MinValue is year 1),
    # and string order must stay time order. The fraction: milliseconds unless given.
    if fraction is None:
        fraction = f"{dt.microsecond // 1000:03d}"
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{fraction}Z"
    )


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LEAP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:60")


def _type_name(attr: S.Attribute) -> str:
    if attr.value_format == "date":
        return "date (YYYY-MM-DD)"
    if attr.type == S.DATETIME:  # (Entra's CDate/Now() write "1/5/2026 10:00:00 AM")
        return "dateTime (ISO 8601, such as 2026-01-05T10:00:00Z)"
    return attr.type


def coerce_scalar(attr: S.Attribute, value: Any, where: str) -> Any:
    """Return the canonical form of ``value`` for a non-complex attribute or raise."""
    t = attr.type
    if t in (S.STRING, S.REFERENCE):
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidValue(f"'{where}': {NUL_IN_TEXT}")
            if attr.value_format == "date":
                value = value.strip()  # as numbers and dateTimes are read
                if not _DATE.fullmatch(value):
                    raise _bad(attr, value, where)
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise _bad(attr, value, where) from None
            return value
        raise _bad(attr, value, where)
    if t == S.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            b = boolean_from_string(value)
            if b is not None:
                return b
        raise _bad(attr, value, where)
    if t == S.INTEGER:
        if isinstance(value, bool):
            raise _bad(attr, value, where)
        if isinstance(value, str):
            parsed = number_from_string(value)
            if isinstance(parsed, (int, float)):
                # Read exactly: through a double, "9007199254740993.0" became ...992 and
                # "1.0000000000000001" became 1.
                value = _integer_text(value.strip(), where)
            else:
                value = parsed
        if isinstance(value, float) and value.is_integer():
            if abs(value) > 2**63:  # said as written: int() of 1e308 has 309 digits
                raise _out_of_range(where, repr(value))
            if 2**53 <= abs(value) <= 2**63:  # a double: perhaps rounded on its way here
                raise InvalidValue(
                    f"'{where}': a number of this size ({value:.17g}) written with a fraction or"
                    " an exponent, or past 64 bits, may have been rounded (a double holds"
                    " integers exactly up to 2^53); write it as a whole number, or as a string"
                )
            value = int(value)
        if isinstance(value, int):
            if -_INT_MAX - 1 <= value <= _INT_MAX:
                return value
            raise _out_of_range(where, _shown_int(value))
        raise _bad(attr, value, where)
    if t == S.DECIMAL:
        if isinstance(value, bool):
            raise _bad(attr, value, where)
        if isinstance(value, str):
            text, value = value.strip(), number_from_string(value)
            if isinstance(value, (int, float)) and not _exact(value, text):
                # A decimal is a binary double (JSON's number): say so rather than round.
                raise InvalidValue(
                    f"'{where}': {text!r} cannot be kept exactly as a decimal, a double (about"
                    " 15 significant digits, magnitudes from about 1e-308 to 1e308)"
                )
            if isinstance(value, int) and abs(value) <= 2**53 and any(c in text for c in ".eE"):
                value = float(value)  # "2.0" is kept as the number 2.0 is, not as 2
        if isinstance(value, int) and -_INT_MAX - 1 <= value <= _INT_MAX:
            return value
        if isinstance(value, int):
            shortest = _shortest_double(value)
            if shortest is None:
                raise InvalidValue(
                    f"'{where}' must be a decimal, got {_shown_int(value)}: a whole number out of"
                    f" -2^63..2^63-1 is kept as a double, {_nearest_double(value)}"
                )
            value = shortest  # a double's digits: stored as that double is, below
        if isinstance(value, float) and math.isfinite(value):
            if value.is_integer() and abs(value) >= 2**53:
                # PostgreSQL's jsonb keeps a double's shortest digits (2^60 came back as
                # 1152921504606847000, 24 away), which JSON reads back as a whole number (up
                # to 2^64; past it as the double again): stored as that number, the same on
                # both databases. Within 64 bits its exact value; from 2^63 to 2^64 the
                # shortest digits themselves, which is what comes back.
                if -_INT_MAX - 1 <= value <= _INT_MAX:
                    return int(value)
                if _INT_MAX < value < 2**64:
                    return int(Decimal(repr(value)))
            return value + 0.0  # -0.0 is 0.0: PostgreSQL's jsonb keeps no sign for zero
        raise _bad(attr, value, where)
    if t == S.DATETIME:
        if isinstance(value, str):
            c = canonical_datetime(value)
            if c is not None:
                # Read back as written (Microsoft's gallery validation compares the text);
                # filters and sorting compare ``instant``s.
                text = value.strip()
                m = _FRACTION.search(text)
                if m is not None and m.group(1)[9:].strip("0"):
                    raise InvalidValue(
                        f"'{where}': {text!r} has more than 9 digits of a second; dateTimes"
                        " are kept and compared to the nanosecond"
                    )
                return text if _RFC3339.fullmatch(text) else _stored_instant(text)
            if _LEAP.search(value):  # RFC 3339 allows it; "not ISO 8601" would be wrong
                raise InvalidValue(
                    f"'{where}': {value.strip()!r} is a leap second, which scimd does not keep;"
                    " send the second before (59.999) or after it"
                )
            if _is_iso(value):  # a dateTime, but its offset moves it out of years 1-9999
                raise InvalidValue(
                    f"'{where}': {value.strip()!r} falls outside years 1-9999 once converted to"
                    " UTC, as scimd stores dateTimes"
                )
        raise _bad(attr, value, where)
    if t == S.BINARY:
        if isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(attr, value, where) from None
            return value
        raise _bad(attr, value, where)
    raise _bad(attr, value, where)  # pragma: no cover - complex handled by the caller


def _stored_instant(text: str) -> str:
    """A dateTime in a form other than RFC 3339's (no offset, a "t", a space, a basic-format
    offset...), as stored: UTC, with every digit of its second it was sent with (at least
    three). Cut to the millisecond, it no longer equalled itself: a filter for the text sent
    found nothing, and sorting could put it after a later instant."""
    full = instant(text)
    assert full is not None  # canonical_datetime read it
    head, fraction = full[:-1].split(".")
    return f"{head}.{fraction.rstrip('0'):0<3}Z"


def _shortest_double(value: int) -> float | None:
    """The double whose shortest form ``value`` is (``9223372036854776000`` is 2^63 written
    with 16 significant digits, as a Decimal holds it), else None: any other whole number
    that large would be rounded."""
    try:
        f = float(value)
    except OverflowError:
        return None
    if math.isfinite(f) and int(Decimal(repr(f))) == value:
        return f
    return None


def _shown_int(value: int) -> str:
    """A whole number for an error's words: a long one by its first digits and its length."""
    text = str(value)
    return text if len(text) <= 30 else f"{text[:20]}... ({len(text.lstrip('-'))} digits)"


def _nearest_double(value: int) -> str:
    """Advice for a whole number a decimal cannot keep: the double it would round to (the
    digits scimd accepts and keeps for it), or that there is none."""
    try:
        f = float(value)
    except OverflowError:
        return "and this one is past a double's range (about 1e308)"
    return f"which would round this one: send {f!r} if that is close enough"


def _out_of_range(where: str, shown: object) -> InvalidValue:
    return InvalidValue(f"'{where}' must be an integer, got {shown}: out of -2^63..2^63-1")


def _integer_text(text: str, where: str) -> int | str:
    """The integer a numeric string writes, exactly; the text itself (refused by the caller)
    when it holds a fraction."""
    d = Decimal(text)
    if d != 0 and d.adjusted() >= 19:  # |d| >= 10^19 > 2^63: refused before int() builds it
        raise _out_of_range(where, text)
    if d != d.to_integral_value():
        return text
    return int(d)


def _exact(number: int | float, text: str) -> bool:
    """Whether ``number`` is the value ``text`` wrote ("1.0000000000000001" became 1)."""
    if isinstance(number, float) and not math.isfinite(number):
        return False
    return Decimal(repr(number) if isinstance(number, float) else number) == Decimal(text)


def _bad(attr: S.Attribute, value: Any, where: str) -> InvalidValue:
    """The value as JSON writes it (``true``, ``null``, ``"x"``), or its JSON type: the
    Python spellings (``True``, ``None``, ``dict``) meant nothing to a SCIM client."""
    shown = shown_json(value)
    name = _type_name(attr)
    article = "an" if name[0] in "aeiou" else "a"
    return InvalidValue(f"'{where}' must be {article} {name}, got {shown}")


def shown_json(value: Any) -> str:
    """A value for an error's words: ``true``, ``false`` and ``null`` as JSON writes them, an
    object or array by its type, a string quoted with its control characters visible (as
    Python's ``repr`` does, a long one cut), a number as it reads."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= 60 else shown[:57] + "..." + shown[0]
    if value is None or isinstance(value, bool):
        return "null" if value is None else ("true" if value else "false")
    return repr(value)
