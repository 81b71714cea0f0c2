"""User passwords: kept only as salted scrypt digests, hashed before the write that keeps them.

A digest costs ~27 ms of CPU. Computed inside a write it stopped every other request for that
long, and Okta, which sends the password in every PUT when it syncs passwords, made each such
PUT a new version of the user (a new salt, so never equal). The server therefore finds the
passwords of a request first (``plaintexts``), hashes them away from the event loop, or keeps
the stored digest when a password verifies against it, and puts the results in their places
(``substituted``) as ``Hashed`` values, which the write stores as they are. A password the
first pass does not find is still hashed by the write itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any, TypeGuard

from scimd.scim.schema import USER_SCHEMA

_FULL = f"{USER_SCHEMA}:password".lower()
_CORE = USER_SCHEMA.lower()
# Distinct passwords one request may set (each costs ~27 ms of CPU; only the last is kept).
MAX_PER_REQUEST = 8


class Hashed(str):
    """A password value that is already a digest (new, or the stored one kept)."""

    __slots__ = ()


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


def hash_password(password: str) -> Hashed:
    salt = os.urandom(16)
    return Hashed(f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}")


def verify(stored: Any, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` (a digest of ``hash_password``) was made of."""
    if not isinstance(stored, str):
        return False
    parts = stored.split("$")
    if len(parts) != 3 or parts[0] != "scrypt":
        return False
    try:
        salt, digest = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt), digest)


def digest_for(password: str, stored: Any) -> Hashed:
    """The stored digest when ``password`` is the stored one (no change), else a new one.

    Both are computed either way: answering a matching password sooner would tell any
    caller whose request is then refused (a stale If-Match) whether it guessed right."""
    same = verify(stored, password)
    new = hash_password(password)
    return Hashed(stored) if same else new


def _is_password_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in ("password", _FULL)


def _plain(value: Any) -> TypeGuard[str]:
    """A password to hash first; other values (a NUL, a number) are left to the write to
    refuse as it refuses them anywhere."""
    return type(value) is str and "\x00" not in value


def _password_value(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with its password replaced: a string, or the one-element list Entra-style
    clients send for single values (the write takes its element)."""
    if _plain(value):
        return fn(value)
    if type(value) is list and len(value) == 1 and _plain(value[0]):
        return [fn(value[0])]
    return value


def _in_resource(body: Any, fn: Callable[[str], str]) -> Any:
    """A resource body (or a path-less PATCH value): top-level password keys, and the core
    schema's own object (``{"urn:...:core:2.0:User": {"password": ...}}``)."""
    if not isinstance(body, dict):
        return body
    out = None
    for k, v in body.items():
        if _is_password_key(k):
            new = _password_value(v, fn)
        elif isinstance(k, str) and k.lower() == _CORE and isinstance(v, dict):
            new = _in_resource(v, fn)
        else:
            continue
        if new is not v:
            out = out if out is not None else dict(body)
            out[k] = new
    return body if out is None else out


def _in_op(op: Any, fn: Callable[[str], str]) -> Any:
    """One PATCH operation: a password path's value, or a path-less value's password keys."""
    if not isinstance(op, dict):
        return op
    fields = {k.lower() if isinstance(k, str) else k: k for k in op}
    if "value" not in fields:
        return op
    path, value = op.get(fields.get("path")), op[fields["value"]]
    if isinstance(path, str) and _is_password_key(path.strip()):
        new = _password_value(value, fn)
    elif path is None or (isinstance(path, str) and not path.strip()):
        new = _in_resource(value, fn)
    else:
        return op
    return op if new is value else {**op, fields["value"]: new}


def _in_patch(body: Any, fn: Callable[[str], str]) -> Any:
    """A PatchOp body; copied only where a password is replaced (most PATCHes hold none)."""
    if not isinstance(body, dict):
        return body
    out = None
    for key, ops in body.items():
        if not isinstance(key, str) or key.lower() != "operations" or not isinstance(ops, list):
            continue
        new_ops = [_in_op(op, fn) for op in ops]
        if any(n is not o for n, o in zip(new_ops, ops, strict=True)):
            out = out if out is not None else dict(body)
            out[key] = new_ops
    return body if out is None else out


def plaintexts(body: Any, *, patch: bool) -> list[str]:
    """The passwords a User POST/PUT body (or a PatchOp body) sets, in plain text."""
    found: list[str] = []

    def collect(value: str) -> str:
        found.append(value)
        return value

    (_in_patch if patch else _in_resource)(body, collect)
    return found


def substituted(body: Any, digests: dict[str, Hashed], *, patch: bool) -> Any:
    """``body`` with each password of ``digests`` replaced by its digest (a new body)."""
    return (_in_patch if patch else _in_resource)(body, lambda v: digests.get(v, v))
