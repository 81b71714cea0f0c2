"""Bulk operations (RFC 7644 §3.7): sequential, each in its own transaction, with ``bulkId``
references resolved as the resources they name are created."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from scimd.scim.errors import InvalidSyntax, InvalidValue, PayloadTooLarge, ScimError
from scimd.scim.resource import resource_id
from scimd.store.audit import Actor

if TYPE_CHECKING:
    from scimd.web.scim import Scim

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
_REF = re.compile(r"bulkId:([^\s\"/]+)")
_RESOURCES = {"users": "User", "groups": "Group"}


class Unresolved(Exception):
    """A ``bulkId:`` reference to an operation that has not (yet) created its resource."""


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in ids:
                raise Unresolved(m.group(1))
            return ids[m.group(1)]

        return _REF.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    return value


async def run(scim: Scim, base: str, body: Any, actor: Actor) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSyntax("a BulkRequest must be a JSON object")
    ops = next((v for k, v in body.items() if k.lower() == "operations"), None)
    if not isinstance(ops, list) or not ops:
        raise InvalidSyntax("a BulkRequest needs a non-empty 'Operations' array")
    limit = scim.settings.max_bulk_operations
    if len(ops) > limit:
        raise PayloadTooLarge(f"a BulkRequest may hold at most {limit} operations")
    fail_on = body.get("failOnErrors")
    if fail_on is not None and (not isinstance(fail_on, int) or fail_on < 1):
        raise InvalidValue("'failOnErrors' must be a positive integer")
    ids: dict[str, str] = {}
    results: list[dict[str, Any] | None] = [None] * len(ops)
    errors = 0
    pending = list(range(len(ops)))
    # Operations whose bulkId references are not yet resolvable wait for a later pass
    # (RFC 7644 §3.7.1 lets the server reorder); a pass that resolves nothing ends the loop.
    while pending:
        waiting = []
        for i in pending:
            if fail_on is not None and errors >= fail_on:
                break
            try:
                results[i] = await _one(scim, ops[i], ids, base, actor)
            except Unresolved:
                waiting.append(i)
                continue
            if int(results[i]["status"]) >= 400:  # type: ignore[index]
                errors += 1
        if len(waiting) == len(pending) or (fail_on is not None and errors >= fail_on):
            for i in waiting:
                op = ops[i] if isinstance(ops[i], dict) else {}
                results[i] = _error_result(
                    op,
                    InvalidValue(
                        "a bulkId reference names no operation that created a resource",
                        status=409,
                    ),
                )
                errors += 1
            break
        pending = waiting
    return {
        "schemas": [BULK_RESPONSE],
        "Operations": [r for r in results if r is not None],
    }


def _error_result(op: dict[str, Any], err: ScimError) -> dict[str, Any]:
    out: dict[str, Any] = {"method": op.get("method"), "status": str(err.status)}
    if op.get("bulkId"):
        out["bulkId"] = op["bulkId"]
    out["response"] = err.to_dict()
    return out


async def _one(scim: Scim, op: Any, ids: dict[str, str], base: str, actor: Actor) -> dict[str, Any]:
    if not isinstance(op, dict):
        return _error_result({}, InvalidSyntax("each bulk operation must be a JSON object"))
    method = str(op.get("method", "")).upper()
    try:
        path = _substitute(op.get("path"), ids)
        data = _substitute(op.get("data"), ids)
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidValue("a bulk operation needs a 'path' such as /Users or /Users/{id}")
        parts = [p for p in path.split("/") if p]
        name = _RESOURCES.get(parts[0].lower()) if parts else None
        if name is None or len(parts) > 2:
            raise InvalidValue(f"bulk path '{path}' must be /Users, /Groups or one of their ids")
        version = op.get("version")
        if version is not None and not isinstance(version, str):
            raise InvalidValue(
                f"a bulk operation's 'version' is an ETag such as W/\"3\", not {version!r}"
            )
        d = scim.directory
        out: dict[str, Any] = {"method": method}
        if op.get("bulkId"):
            out["bulkId"] = op["bulkId"]
        if method == "POST" and len(parts) == 1:
            if not op.get("bulkId"):
                raise InvalidValue("a bulk POST needs a 'bulkId'")
            w = await scim.write(d.create, name, data, actor, base)
            assert w.resource is not None
            ids[str(op["bulkId"])] = w.resource["id"]
            out.update(location=w.resource["meta"]["location"], version=w.etag, status="201")
            return out
        if len(parts) != 2:
            raise InvalidValue(f"{method} needs a resource path like /{parts[0]}/{{id}}")
        rid = resource_id(name, parts[1])
        location = f"{base}/{parts[0]}/{rid}"
        if method == "PUT":
            w = await scim.write(d.replace, name, rid, data, actor, base, version)
            out.update(location=location, version=w.etag, status="200")
        elif method == "PATCH":
            w = await scim.write(d.patch, name, rid, data, actor, base, version, render=False)
            out.update(location=location, version=w.etag, status="200")
        elif method == "DELETE":
            await scim.write(d.delete, name, rid, actor, version)
            out.update(location=location, status="204")
        else:
            raise InvalidValue(f"unsupported bulk method '{op.get('method')}'")
        return out
    except Unresolved:
        raise
    except ScimError as e:
        return _error_result(op, e)
