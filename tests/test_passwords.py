"""Passwords are found in a request before its write, hashed once, and kept when unchanged."""

from __future__ import annotations

from scimd.scim import passwords as P
from scimd.scim.schema import USER_SCHEMA


def test_the_passwords_of_resource_and_patch_bodies_are_found_and_replaced() -> None:
    body = {"userName": "a", "Password": "pw1", f"{USER_SCHEMA}:password": "pw2", "x": "pw1"}
    assert P.plaintexts(body, patch=False) == ["pw1", "pw2"]
    patch = {
        "Operations": [
            {"op": "replace", "path": "PASSWORD", "value": "pw3"},
            {"op": "Replace", "Value": {"password": "pw4", "active": False}},
            {"op": "replace", "path": f" {USER_SCHEMA}:password", "value": "pw5"},
            {"op": "replace", "path": "displayName", "value": "pw6"},
            {"op": "remove", "path": "password"},
        ]
    }
    assert P.plaintexts(patch, patch=True) == ["pw3", "pw4", "pw5"]
    digests = {p: P.Hashed(f"h-{p}") for p in ("pw1", "pw2", "pw3", "pw4", "pw5")}
    new = P.substituted(body, digests, patch=False)
    assert new["Password"] == "h-pw1" and new[f"{USER_SCHEMA}:password"] == "h-pw2"
    assert new["x"] == "pw1" and body["Password"] == "pw1"  # not in place
    ops = P.substituted(patch, digests, patch=True)["Operations"]
    assert [ops[0]["value"], ops[1]["Value"]["password"], ops[2]["value"]] == [
        "h-pw3",
        "h-pw4",
        "h-pw5",
    ]
    assert ops[3]["value"] == "pw6" and ops[4] == {"op": "remove", "path": "password"}
    assert P.plaintexts({"userName": "a"}, patch=False) == []
    # Left for the write to refuse, as it refuses a NUL or a number anywhere.
    assert P.plaintexts({"password": "a\x00b"}, patch=False) == []
    assert P.plaintexts({"password": 1234}, patch=False) == []
    assert P.plaintexts(["not", "a", "body"], patch=True) == []


def test_a_password_that_is_the_stored_one_keeps_its_digest() -> None:
    stored = P.hash_password("s3cret")
    assert P.verify(stored, "s3cret") and not P.verify(stored, "s3cret ")
    assert P.digest_for("s3cret", stored) == stored
    other = P.digest_for("changed", stored)
    assert other != stored and P.verify(other, "changed")
    for junk in (None, 42, "plain", "scrypt$zz$zz", "md5$00$00"):
        assert not P.verify(junk, "s3cret")


def test_the_other_forms_a_password_comes_in_are_found_too() -> None:
    """A one-element list, a PATCH path of "" (path-less) and the core schema's own object
    were hashed inside the write: on the event loop, and always as a new version."""
    body = {"userName": "a", USER_SCHEMA: {"password": "pw1"}, "Password": ["pw2"]}
    assert sorted(P.plaintexts(body, patch=False)) == ["pw1", "pw2"]
    patch = {
        "Operations": [
            {"op": "replace", "path": "password", "value": ["pw3"]},
            {"op": "replace", "path": "", "value": {"password": "pw4"}},
            {"op": "replace", "value": {USER_SCHEMA: {"password": "pw5"}}},
            {"op": "replace", "path": "password", "value": ["pw6", "pw7"]},
        ]
    }
    assert P.plaintexts(patch, patch=True) == ["pw3", "pw4", "pw5"]
    digests = {p: P.Hashed(f"h-{p}") for p in ("pw1", "pw2", "pw3", "pw4", "pw5")}
    new = P.substituted(body, digests, patch=False)
    assert new[USER_SCHEMA] == {"password": "h-pw1"} and new["Password"] == ["h-pw2"]
    ops = P.substituted(patch, digests, patch=True)["Operations"]
    assert ops[0]["value"] == ["h-pw3"] and ops[1]["value"] == {"password": "h-pw4"}
    assert ops[2]["value"] == {USER_SCHEMA: {"password": "h-pw5"}}
    assert ops[3]["value"] == ["pw6", "pw7"]  # left for the write to refuse
