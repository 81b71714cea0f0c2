"""Named normalisations for what real clients send beyond the letter of the RFCs.

Each function accepts one documented behaviour of Microsoft Entra ID's provisioning service (see
``shared/entra/facts.md``) or another major client, and turns it into the RFC form the rest of the
core understands. Nothing here drops data: a shape we cannot read is left as it is, and the
validator then rejects it with a message that names it.
"""

from __future__ import annotations

import re
from typing import Any

from scimd.scim import schema as S

ADSCIM_GROUP_SCHEMA = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
"""Entra's legacy group schema URI (facts §1.5): listed in ``schemas`` on POST /Groups."""

FLAG_QUERY_PARAMS = frozenset(
    {"aadoptscim062020", "azureadscimpatch2017", "azureadscimpatch062020"}
)
"""Entra feature flags an admin appends to the Tenant URL (facts §2.3); ignored if forwarded."""

_NUMBER = re.compile(r"^\s*[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\s*$")


def normalise_op(op: Any) -> Any:
    """Entra sends ``Add``/``Replace``/``Remove`` (facts §1.2, §4.1); RFC ops are lower-case."""
    return op.lower() if isinstance(op, str) else op


def boolean_from_string(value: str) -> bool | None:
    """Entra's default ``active`` mapping yields the strings ``"True"``/``"False"`` (facts §1.3,
    §2.4); booleans also arrive as ``"true"``/``"false"``. Any other string is not a boolean."""
    low = value.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    return None


def number_from_string(value: str) -> Any:
    """Entra maps directory attributes as strings, so ``"42"`` arrives for an Integer custom
    property (facts §0). Lossless numeric strings become numbers; anything else is returned
    unchanged for the caller to reject."""
    if len(value) > 400 or not _NUMBER.match(value):  # past any double or 64-bit integer
        return value
    s = value.strip()
    if any(c in s for c in ".eE"):
        f = float(s)
        return int(f) if f.is_integer() and "e" not in s.lower() and abs(f) < 2**53 else f
    return int(s)


def complex_from_string(value: Any, has_value_sub: bool) -> Any:
    """Entra sends ``manager`` as a bare id string (facts §3, §4.8); a string given for a complex
    attribute with a ``value`` sub-attribute means ``{"value": <string>}``."""
    if isinstance(value, str) and has_value_sub:
        return {"value": value}
    return value


def empty_as_unassigned(attr: S.Attribute, value: Any) -> Any:
    """Entra forwards a source attribute that became empty as ``""`` (Microsoft's HR writeback
    notes), and its gallery validation (``SCIM_Null_Update_Test``, facts §3.2) clears optional
    attributes with ``""`` before it tries ``null``. For a single-valued attribute whose values
    cannot be an empty string (a number, boolean, dateTime or date, or an object such as
    ``manager``), ``""`` therefore means "no value", as ``null`` does (RFC 7643 §2.5); so does
    ``[]`` for a single-valued object (Microsoft's manager test "Replace with empty"). A
    string attribute keeps ``""`` as sent."""
    if attr.multi_valued:
        return value
    if value == "" and (
        attr.is_complex
        or attr.value_format == "date"
        or attr.type not in (S.STRING, S.REFERENCE, S.BINARY)
    ):
        return None
    if value == [] and attr.is_complex:
        return None
    return value


def single_from_list(value: Any) -> Any:
    """Entra's tutorial adds ``manager`` as a one-element array (facts §1.4 example 5); a
    one-element list given for a single-valued attribute means its element."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def list_from_single(value: Any) -> Any:
    """Some clients send one object for a multi-valued attribute; it means a one-element list."""
    if isinstance(value, dict):
        return [value]
    return value


def drop_nulls(value: Any) -> Any:
    """Entra's documented example POSTs ``"addresses": null`` (facts §1.4 example 2). A null
    means "no value" (RFC 7643 §2.5), so null-valued keys are removed, at every depth. A
    value without nulls, nearly every body, is returned as it is, not copied."""
    if not _has_null(value):
        return value
    return _without_nulls(value)


def _has_null(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    for v in value:  # noqa: SIM110 (a loop: any() over a generator took half as long again)
        if v is None or (isinstance(v, (dict, list)) and _has_null(v)):
            return True
    return False


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def split_pathless_value(value: dict[str, Any]) -> list[tuple[str, Any]]:
    """With the ``aadOptscim062020`` flag Entra sends one path-less ``replace`` whose value uses
    dotted keys (``name.givenName``) and full-URN keys (``urn:...:User:employeeNumber``) (facts
    §2.4). Each key is an attribute path, so the op is the list of ``(path, value)`` pairs;
    a plain key (``userName``) is already a path of its own."""
    return list(value.items())


def members_remove_selector(members: list[dict[str, str]]) -> list[str]:
    """Entra removes members with ``{"op":"Remove","path":"members","value":[{"value":id}]}``
    (facts §1.5, §2.4), which RFC 7644 does not define. The value lists the members to remove,
    and only those: their ids. ``members`` has been checked as any member list is (keys in any
    case, no other key, a known ``type``), so a remove accepts what an add accepts."""
    return [m["value"] for m in members]
