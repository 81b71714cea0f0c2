"""Validating and canonicalising resources, and projecting them for responses.

``normalise`` is one pass over the request body: every key is resolved case-insensitively to its
definition, every value checked and canonicalised by type, read-only attributes ignored (RFC
7643 §2.2), and anything undeclared rejected with a message that names it. The result is the
stored document in canonical spelling, extensions nested under their URN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scimd.scim import compat
from scimd.scim import schema as S
from scimd.scim.errors import (
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NotFound,
    ScimError,
)
from scimd.scim.filter import NUL_IN_TEXT
from scimd.scim.passwords import Hashed, hash_password
from scimd.scim.values import coerce_scalar, fold

# The PATCH request's message schema (patch.py): a body naming it is no resource.
_PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:patchop"
# Keys a client may send that the server owns.
_SERVER_OWNED = frozenset({"id", "meta", "schemas"})


def normalise(rt: S.ResourceType, body: Any, *, partial: bool = False) -> dict[str, Any]:
    """Return the canonical document for ``body`` (no ``id``/``meta``/``schemas``).

    ``partial`` skips the required-attribute check (used for PATCH values).
    """
    if not isinstance(body, dict):
        raise InvalidSyntax(f"a {rt.name} must be a JSON object")
    schemas = body.get("schemas")
    if schemas is not None and (
        not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas)
    ):
        raise InvalidSyntax("'schemas' must be a list of schema URIs")
    if not partial and schemas and any(s.lower() == _PATCH_OP for s in schemas):
        # Else "unknown attribute 'Operations'": true, but not what the client got wrong.
        raise InvalidSyntax(
            f"this body is a PatchOp ({_PATCH_OP}): send it with PATCH, not as a {rt.name}"
        )
    # Unknown URIs in "schemas" (Entra's ADSCIM group URI, the tutorial's malformed
    # "...enterprise:2.0User") are tolerated: "schemas" is recomputed from the data.
    body = compat.drop_nulls(body)
    doc: dict[str, Any] = {}
    # Sub-attributes named on their own ("name.givenName") are set after whole attributes:
    # written before "name": {...}, the whole value replaced them, whatever the key order.
    parts: list[tuple[S.Resolved, Any]] = []
    given = _Given(rt)
    for key, value in body.items():
        if key.lower() in _SERVER_OWNED:
            continue
        ext = rt.extension(key) if key[:4].lower() == "urn:" else None
        if ext is not None:
            if not isinstance(value, dict):
                raise InvalidValue(f"'{ext.id}' must be a JSON object of {ext.name} attributes")
            for sub_key, sub_value in value.items():
                if sub_key.lower() in _SERVER_OWNED:
                    continue  # some clients repeat "schemas" inside extension objects
                try:
                    res = rt.resolve_in(ext, sub_key)
                except InvalidPath as e:  # its words name the attribute and the schema
                    raise InvalidValue(e.detail) from None
                if given.first(res, f"{key}:{sub_key}", sub_value):
                    set_attribute(rt, doc, res, sub_value)
            if doc.get(ext.id) == {}:
                del doc[ext.id]  # only read-only or empty values: store no empty extension
            continue
        try:
            res = rt.resolve(key)
        except InvalidPath as e:
            raise InvalidValue(e.detail) from None
        if not given.first(res, key, value):
            continue
        if res.sub is not None:
            parts.append((res, value))
        else:
            set_attribute(rt, doc, res, value)
    for res, value in parts:
        set_attribute(rt, doc, res, value)
    for ext, _ in rt.extensions:
        if doc.get(ext.id) == {}:
            del doc[ext.id]  # a qualified key whose value held only read-only parts
    if not partial:
        check_required(rt, doc)
    return doc


class _Given:
    """The attributes a body has set, by key: attribute names are case-insensitive and an
    extension's attributes may be written inside its object or with its URN, so two keys
    (``emails`` and ``Emails``) can name one attribute. Given twice alike, the second is
    ignored; given differently, the body is refused: one value was silently lost."""

    def __init__(self, rt: S.ResourceType) -> None:
        self.core = rt.core.id
        self.seen: dict[tuple[str, str, str | None], tuple[str, Any]] = {}

    def first(self, res: S.Resolved, key: str, value: Any) -> bool:
        """Whether ``key`` sets its attribute for the first time (False: again, alike)."""
        schema = "" if res.schema in ("", self.core) else res.schema
        attr = res.attr
        if res.sub is None and attr.is_complex and not attr.multi_valued and type(value) is dict:
            # Its sub-attributes too: "name" and "name.givenName" both name name.givenName.
            for k, v in value.items():
                sub = attr.sub.get(k.lower()) if isinstance(k, str) else None
                if sub is not None and v is not None:
                    where = f"{res.where}.{sub.name}"
                    self._note((schema, attr.name, sub.name), f"{key}.{k}", v, where, sub)
        sub_name = res.sub.name if res.sub else None
        ident = (schema, attr.name, sub_name)
        return self._note(ident, key, value, res.where, res.sub or attr)

    def _note(
        self,
        ident: tuple[str, str, str | None],
        key: str,
        value: Any,
        where: str,
        attr: S.Attribute,
    ) -> bool:
        return given_once(self.seen, ident, key, value, attr, where)


def given_once(
    seen: dict[Any, tuple[str, Any]],
    ident: Any,
    key: str,
    value: Any,
    attr: S.Attribute | None,
    where: str,
) -> bool:
    """Whether ``key`` sets the target ``ident`` for the first time in a body (``seen``:
    those set so far, with their key and value); False when it was set alike already; a
    400 naming both keys when it was set differently (the last key won, silently)."""
    before = seen.get(ident)
    if before is None:
        seen[ident] = (key, value)
        return True
    if before[1] == value or (attr is not None and same_value(attr, before[1], value, where)):
        return False
    raise twice(where, before[0], key)


def same_value(attr: S.Attribute, a: Any, b: Any, where: str) -> bool:
    """Whether two values given for ``attr`` are one value once read as it reads them
    (``true`` and ``"True"``; a manager as an id and as ``{"value": id}``)."""
    if a == b:
        return True
    try:
        return bool(normalise_value(attr, a, where) == normalise_value(attr, b, where))
    except ScimError:
        return False


def twice(where: str, first: str, second: str) -> InvalidValue:
    """The refusal of a body naming ``where`` twice (as ``first`` and ``second``)."""
    keys = f", as '{first}' and '{second}'," if first != second else ""
    return InvalidValue(f"'{where}' is given twice{keys} with different values: send it once")


def set_attribute(rt: S.ResourceType, doc: dict[str, Any], res: S.Resolved, value: Any) -> None:
    """Validate ``value`` for ``res`` and store it in ``doc`` (read-only targets are ignored)."""
    if res.attr.mutability == "readOnly" or (res.sub and res.sub.mutability == "readOnly"):
        return
    container = container_for(doc, res.schema, rt, create=True)
    where = res.where
    if res.sub is None:
        v = normalise_value(res.attr, value, where)
        if res.attr.mutability == "writeOnly" and isinstance(v, str) and type(v) is not Hashed:
            v = hash_password(v)  # one the server did not hash before the write (passwords.py)
        if v is None:
            container.pop(res.attr.name, None)
        else:
            container[res.attr.name] = v
        return
    # "name.givenName": set one sub-attribute of a single-valued complex attribute.
    if res.attr.multi_valued:
        raise InvalidPath(f"'{where}' names a sub-attribute of the multi-valued '{res.attr.name}'")
    parent = container.get(res.attr.name)
    parent = dict(parent) if isinstance(parent, dict) else {}
    parent[res.sub.name] = coerce_scalar(res.sub, value, where)
    container[res.attr.name] = parent


def container_for(
    doc: dict[str, Any], urn: str, rt: S.ResourceType, *, create: bool
) -> dict[str, Any]:
    if urn in ("", rt.core.id):
        return doc
    ext = doc.get(urn)
    if not isinstance(ext, dict):
        ext = {}
        if create:
            doc[urn] = ext
    return ext


def normalise_value(attr: S.Attribute, value: Any, where: str) -> Any:
    """Canonical form of a whole attribute value; ``None`` means "no value"."""
    value = compat.empty_as_unassigned(attr, value)
    if value is None:
        return None
    if attr.multi_valued:
        value = compat.list_from_single(value)
        if not isinstance(value, list):
            raise InvalidValue(f"'{where}' is multi-valued: send a JSON array")
        if attr.is_complex:
            given = [normalise_complex(attr, v, where) for v in value if v is not None]
            if "value" in attr.sub:
                # An email without its address ({"type": "work", "primary": true}, or its
                # value null) is no email: left out, as a PATCH removing its value leaves it.
                given = [item for item in given if "value" in item]
            items = distinct_elements(attr, given)
            if sum(1 for i in items if i.get("primary") is True) > 1:
                raise InvalidValue(f"'{where}' has more than one value marked primary")
            return items or None
        return [coerce_scalar(attr, v, where) for v in value if v is not None] or None
    if attr.is_complex:
        value = compat.single_from_list(value)
        value = compat.complex_from_string(value, "value" in attr.sub)
        out = normalise_complex(attr, value, where)
        return out or None
    return coerce_scalar(attr, compat.single_from_list(value), where)


def element_key(attr: S.Attribute, item: dict[str, Any]) -> frozenset[tuple[str, Any]] | None:
    """What makes two elements of ``attr`` the same value: equal sub-attributes, strings
    compared without case unless the sub-attribute is ``caseExact`` (RFC 7643 §2.3.1), as
    filters compare them. ``{"value": "A@x.com"}`` is then a second copy of ``{"value":
    "a@x.com"}``. ``primary`` marks a value rather than being part of it: ``{"value": "a",
    "primary": false}`` and ``{"value": "a"}`` are one value (RFC 7643 §2.4: the same
    (type, value) once per attribute; a demoted element, given ``primary: false``, was added
    again beside itself). None for an element that is not an object of scalars."""
    try:
        return frozenset(
            (k, fold(v) if isinstance(v, str) and _folds(attr, k) else v)
            for k, v in item.items()
            if k != "primary"
        )
    except TypeError:  # a nested list or object: not a normal element
        return None


def _folds(attr: S.Attribute, key: str) -> bool:
    sub = attr.sub.get(key.lower())
    return sub is not None and sub.type == S.STRING and not sub.case_exact


def distinct_elements(attr: S.Attribute, items: list[Any]) -> list[Any]:
    """The elements without empty objects, each once (the first copy, primary if any copy
    was): RFC 7643 §2.4 says a service provider SHOULD NOT return the same value twice, and a
    second copy of an element adds nothing. (Anything but an object of scalars is kept as
    it is.)"""
    if len(items) == 1:  # the usual case (one email, one phone): nothing to compare
        return items if items[0] != {} else []
    seen: dict[frozenset[tuple[str, Any]], int] = {}
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            if not item:
                continue
            key = element_key(attr, item)
            if key is None:
                out.append(item)
                continue
            if key in seen:
                kept = out[seen[key]]
                if item.get("primary") is True and kept.get("primary") is not True:
                    out[seen[key]] = {**kept, "primary": True}
                continue
            seen[key] = len(out)
        out.append(item)
    return out


def normalise_complex(attr: S.Attribute, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(f"'{where}' values must be JSON objects with sub-attributes")
    out: dict[str, Any] = {}
    for key, v in value.items():
        if v is None:
            continue
        sub = attr.sub.get(key.lower()) if key.isascii() else None  # (see resolve_parts)
        if sub is None:
            names = ", ".join(s.name for s in attr.sub_attributes)
            raise InvalidValue(f"'{where}' has no sub-attribute '{key}' (it has {names})")
        if sub.mutability == "readOnly":
            continue
        coerced = coerce_scalar(sub, v, f"{where}.{sub.name}")
        if sub.name in out and out[sub.name] != coerced:  # {"givenName": .., "GivenName": ..}
            first = next(k for k in value if k.lower() == key.lower())
            raise twice(f"{where}.{sub.name}", first, key)
        out[sub.name] = coerced
    return out


def check_required(rt: S.ResourceType, doc: dict[str, Any], patched: bool = False) -> None:
    """A missing required attribute: invalidValue in a body (RFC 7644 §3.12), ``mutability``
    when a PATCH removed or emptied it (§3.5.2.2)."""
    for schema in rt.schemas:
        container = doc if schema is rt.core else doc.get(schema.id, {})
        for attr in schema.attributes:
            if attr.required and attr.mutability != "readOnly":
                v = container.get(attr.name)
                if v is None or v == [] or (isinstance(v, str) and not v.strip()):
                    if patched:
                        raise Mutability(
                            f"'{attr.name}' is required for a {rt.name}: a PATCH can replace"
                            " it, not remove or empty it"
                        )
                    raise InvalidValue(f"'{attr.name}' is required for a {rt.name}")


def schemas_of(rt: S.ResourceType, doc: dict[str, Any]) -> list[str]:
    """The ``schemas`` list: the core schema plus each extension that holds data."""
    out = [rt.core.id]
    for ext, _ in rt.extensions:
        data = doc.get(ext.id)
        if isinstance(data, dict) and data:  # "" values included: they are returned
            out.append(ext.id)
    return out


# ---------------------------------------------------------------------------------------------
def resource_id(name: str, rid: str) -> str:
    """The id in a resource's path; one with a NUL character names nothing (none can hold
    it), which PostgreSQL would refuse to even look up."""
    if "\x00" in rid:
        raise NotFound(f"{name} {rid!r} not found: {NUL_IN_TEXT}")
    return rid


# Projection (RFC 7644 §3.4.2.5, §3.9)


def parse_attribute_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def project(
    resource: dict[str, Any],
    rt: S.ResourceType,
    attributes: Iterable[str] = (),
    excluded: Iterable[str] = (),
) -> dict[str, Any]:
    """Apply ``attributes``/``excludedAttributes`` with the schema's ``returned`` rules.

    ``resource`` is a rendered resource (never-returned attributes already absent).
    """
    attributes = list(attributes)
    excluded = list(excluded)
    if not attributes and not excluded:
        return resource
    out: dict[str, Any] = {}
    if attributes:
        wanted = _resolve_list(rt, attributes)
        for key, value in resource.items():
            if key in ("schemas", "id"):
                out[key] = value
                continue
            ext = rt.extension(key) if key.startswith("urn:") else None
            if ext is not None and isinstance(value, dict):
                whole = (ext.id, _WHOLE) in wanted
                sub = value if whole else _select(value, ext.id, wanted, rt)
                if sub:
                    out[key] = sub
                continue
            picked = _select({key: value}, "", wanted, rt)
            out.update(picked)
    else:
        drop = _resolve_list(rt, excluded)
        for key, value in resource.items():
            ext = rt.extension(key) if key.startswith("urn:") else None
            if ext is not None and isinstance(value, dict):
                kept = {} if (ext.id, _WHOLE) in drop else _drop(value, ext.id, drop, rt)
                if kept:
                    out[key] = kept
                continue
            out.update(_drop({key: value}, "", drop, rt))
    if isinstance(out.get("schemas"), list):
        # RFC 7643 §3: the schemas of the attributes present; an extension left out goes too.
        out["schemas"] = [u for u in out["schemas"] if rt.extension(u) is None or u in out]
    return out


Wanted = dict[tuple[str, str], set[str] | None]  # (urn, attr) -> sub-attributes (None = all)
_WHOLE = ""  # (urn, _WHOLE): the whole extension, named by its URN alone (RFC 7643 §3.3)


def _resolve_list(rt: S.ResourceType, paths: list[str]) -> Wanted:
    wanted: Wanted = {}
    for p in paths:
        ext = rt.extension(p)
        if ext is not None:
            wanted[(ext.id, _WHOLE)] = None
            continue
        if p.lower() == rt.core.id.lower():
            # The core schema's URN alone names its attributes, as an extension's URN names
            # the extension's (it selected nothing: a reply of id and schemas).
            wanted.update({("", a.name): None for a in rt.core.attributes})
            continue
        try:
            res = rt.resolve(_common_unqualified(rt, p))
        except InvalidPath:
            # RFC 7644 leaves unknown names in attributes lists undefined; ignoring them is what
            # clients expect (Entra asks for "ID" upper-cased, which resolves anyway).
            continue
        urn = "" if res.schema in ("", rt.core.id) else res.schema
        key = (urn, res.attr.name)
        if res.sub is None:
            wanted[key] = None
        elif key not in wanted or wanted[key] is not None:
            cur = wanted.get(key)
            wanted[key] = (cur or set()) | {res.sub.name}
    return wanted


def _common_unqualified(rt: S.ResourceType, path: str) -> str:
    """``path`` without the core schema's URN when it names a common attribute (id,
    externalId, meta): RFC 7644 §3.10 lets any attribute carry its schema's URN, and a PATCH
    path takes ``urn:...:User:externalId``; the projection silently ignored it."""
    prefix = rt.core.id.lower() + ":"
    if path.lower().startswith(prefix):
        rest = path[len(prefix) :]
        if rest.partition(".")[0].lower() in S.COMMON:
            return rest
    return path


def _definition(rt: S.ResourceType, urn: str, name: str) -> S.Attribute | None:
    if urn:
        schema = rt.by_urn.get(urn.lower())
        return schema.attr.get(name.lower()) if schema else None
    return rt.core.attr.get(name.lower()) or S.COMMON.get(name.lower())


def _select(
    container: dict[str, Any], urn: str, wanted: Wanted, rt: S.ResourceType
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in container.items():
        attr = _definition(rt, urn, name)
        if attr is None:
            continue
        if attr.returned == "always":
            out[name] = value
            continue
        if (urn, attr.name) not in wanted:
            continue
        subs = wanted[(urn, attr.name)]
        if subs is None:
            out[name] = value
        elif kept := _subset(value, subs, attr):  # no empty {} or [] for what has none
            out[name] = kept
    return out


def _drop(container: dict[str, Any], urn: str, drop: Wanted, rt: S.ResourceType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in container.items():
        attr = _definition(rt, urn, name)
        key = (urn, attr.name if attr else name)
        if attr is None or attr.returned == "always" or key not in drop:
            out[name] = value
            continue
        subs = drop[key]
        if subs is None:
            continue
        keep = {s.name for s in attr.sub_attributes} - subs
        kept = _subset(value, keep, attr)
        if kept:
            out[name] = kept
    return out


def _subset(value: Any, subs: set[str], attr: S.Attribute) -> Any:
    always = {s.name for s in attr.sub_attributes if s.returned == "always"}
    keep = subs | always
    if isinstance(value, list):  # an element without the sub-attributes is left out, not {}
        parts = ({k: v for k, v in e.items() if k in keep} for e in value if isinstance(e, dict))
        return [p for p in parts if p]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in keep}
    return value
