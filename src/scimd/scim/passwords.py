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


class Hashed(str):
    """A password value that is already a digest (new, or the stored one kept)."""

    __slots__ = ()


def hash_password(password: str) -> Hashed:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return Hashed(f"scrypt${salt.hex()}${digest.hex()}")


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
    got = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return hmac.compare_digest(got, digest)


def digest_for(password: str, stored: Any) -> Hashed:
    """The stored digest when ``password`` is the stored one (no change), else a new one."""
    if verify(stored, password):
        return Hashed(stored)
    return hash_password(password)


def _is_password_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in ("password", _FULL)


def _plain(value: Any) -> TypeGuard[str]:
    """A password to hash first; other values (a NUL, a number) are left to the write to
    refuse as it refuses them anywhere."""
    return type(value) is str and "\x00" not in value


def _in_resource(body: Any, fn: Callable[[str], str]) -> Any:
    if not isinstance(body, dict) or not any(_is_password_key(k) for k in body):
        return body
    return {k: fn(v) if _is_password_key(k) and _plain(v) else v for k, v in body.items()}


def _in_patch(body: Any, fn: Callable[[str], str]) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key, ops in body.items():
        if not isinstance(key, str) or key.lower() != "operations" or not isinstance(ops, list):
            continue
        new_ops = []
        for op in ops:
            if isinstance(op, dict):
                fields = {k.lower() if isinstance(k, str) else k: k for k in op}
                path, value = op.get(fields.get("path")), op.get(fields.get("value"))
                if isinstance(path, str) and _is_password_key(path.strip()):
                    if _plain(value):
                        op = {**op, fields["value"]: fn(value)}
                elif path is None and "value" in fields:
                    op = {**op, fields["value"]: _in_resource(value, fn)}
            new_ops.append(op)
        out[key] = new_ops
    return out


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
