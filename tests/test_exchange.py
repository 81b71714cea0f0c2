"""The SCIM request's query string parser agrees with the standard library's."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scimd.scim.errors import InvalidValue
from scimd.web.exchange import query_params

PIECES = st.sampled_from(
    ["filter", "Filter", "count", "a+b", "%20", "%zz", "=", "&", "+", "%", "%C3%A9", "é"]
)
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=8).map("".join)


def reference(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(raw.decode(), keep_blank_values=True, errors="strict"):
        out.setdefault(k.lower(), v)
    return out


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_raw_query_strings_parse_like_parse_qsl(text: str) -> None:
    raw = text.encode("utf-8")
    try:
        expected = reference(raw)
    except UnicodeDecodeError:  # e.g. "%8f": a byte that is not UTF-8
        with pytest.raises(InvalidValue, match="not UTF-8"):
            query_params(raw)
        return
    assert query_params(raw) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=20)), max_size=5))
def test_encoded_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    assert query_params(raw) == reference(raw)
    for k, _ in pairs:
        if k:
            assert k.lower() in query_params(raw)


def test_entra_filter_query() -> None:
    raw = b"filter=userName%20eq%20%22a%2Bb%40x.example%22&excludedAttributes=members"
    assert query_params(raw) == {
        "filter": 'userName eq "a+b@x.example"',
        "excludedattributes": "members",
    }


def test_non_ascii_is_utf8_and_nothing_else() -> None:
    """Raw or percent-encoded, a query is UTF-8 (RFC 3986 §2.5): é either way. Bytes that are
    not UTF-8 are refused rather than read as U+FFFD (a filter would then look for, and
    could find, another name) or as Latin-1."""
    assert query_params('filter=userName eq "josé"'.encode()) == {"filter": 'userName eq "josé"'}
    assert query_params(b"filter=jos%C3%A9") == {"filter": "josé"}
    for raw in (b"filter=repl%FFchar", b"filter=repl\xffchar", b"a%E9=1", b"x=%C3"):
        with pytest.raises(InvalidValue, match="not UTF-8"):
            query_params(raw)
