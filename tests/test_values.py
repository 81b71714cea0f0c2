"""Canonical dateTimes (scim/values.py): every year from 1 to 9999, any offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from scimd.scim.values import canonical_datetime

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
