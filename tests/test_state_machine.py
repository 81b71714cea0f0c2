"""The service as a state machine: random sequences of Entra's operations against a model.

Hypothesis drives a live server on each database through creates, Entra-style PATCHes (user
attributes, member adds and remove-with-value), PUTs and deletes of users and groups, with
colliding names and stale ids, and keeps a model of what must be there. After every step the
server must agree with the model: each group's members, each user's ``groups``, the
``userName eq`` probe, a custom Integer property set in each of Entra's forms and filtered
numerically, ETags that change exactly when a resource changes, and the counts.

Each run of the machine works under its own name prefix (the server is shared by the runs),
and the examples are derandomised in CI; ``SCIMD_FUZZ_EXAMPLES`` runs more with fresh seeds.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from scimd.scim.values import fold
from support.live_server import provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
EXAMPLES = int(os.environ.get("SCIMD_FUZZ_EXAMPLES", "0")) or 20
RUNS = itertools.count()

# Few names, in several cases, so that creates and renames collide (uniqueness ignores case).
names = st.sampled_from(["ann", "Ann", "bob", "BOB", "cy", "dee"])


def _version(tag: str) -> str:
    """The version in a user's tag (``W/"3"``, or ``W/"3.<digest of its groups>"``)."""
    return tag.removeprefix("W/").strip('"').split(".")[0]


@dataclass
class ModelUser:
    user_name: str
    active: bool = True  # a new user is active; a PUT without `active` keeps it
    title: str | None = None
    age: int | None = None  # the custom Integer property, set the ways Entra sends it
    etag: str = ""
    # Its groups (id, displayName) when ``etag`` was seen: they are part of the user's tag.
    groups: frozenset[tuple[str, str]] = frozenset()


@dataclass
class ModelGroup:
    display_name: str
    members: set[str] = field(default_factory=set)
    etag: str = ""


class Directory(RuleBasedStateMachine):
    """One run: a model of the users and groups it made, and the server they must match."""

    client: httpx.Client  # set by the test before the machine runs

    users_b = Bundle("users")
    groups_b = Bundle("groups")

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"sm{next(RUNS)}-"
        self.users: dict[str, ModelUser] = {}
        self.groups: dict[str, ModelGroup] = {}
        self.gone: dict[str, str] = {}  # deleted id: its endpoint, most recent last

    # -- helpers ------------------------------------------------------------------------------
    def _taken(self, table: dict[str, Any], name: str, attr: str, but: str | None = None) -> bool:
        return any(fold(getattr(v, attr)) == fold(name) for k, v in table.items() if k != but)

    def _groups_of(self, uid: str) -> frozenset[tuple[str, str]]:
        return frozenset(
            (gid, g.display_name) for gid, g in self.groups.items() if uid in g.members
        )

    def _saw(self, uid: str, r: httpx.Response) -> None:
        """Record the user's tag from a reply, with the groups it has now."""
        user = self.users[uid]
        user.etag, user.groups = r.headers["etag"], self._groups_of(uid)

    def _patch(self, path: str, *ops: dict[str, Any]) -> httpx.Response:
        return self.client.patch(path, json={"schemas": [PATCH], "Operations": list(ops)})

    # -- users --------------------------------------------------------------------------------
    @rule(target=users_b, name=names)
    def create_user(self, name: str) -> Any:
        user_name = self.prefix + name
        r = self.client.post("/Users", json={"schemas": [USER], "userName": user_name})
        if self._taken(self.users, user_name, "user_name"):
            assert r.status_code == 409, r.text
            assert r.json()["scimType"] == "uniqueness"
            return multiple()
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        self.users[uid] = ModelUser(user_name, etag=r.headers["etag"])
        return uid

    @rule(uid=users_b, active=st.sampled_from(["True", "False", True, False]))
    def set_active(self, uid: str, active: Any) -> None:
        r = self._patch(f"/Users/{uid}", {"op": "Replace", "path": "active", "value": active})
        if uid not in self.users:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 200, r.text
        want = active in (True, "True")
        user = self.users[uid]
        assert r.json()["active"] is want
        if user.active == want:
            assert r.headers["etag"] == user.etag  # nothing changed: same version
        else:
            assert r.headers["etag"] != user.etag
        user.active = want
        self._saw(uid, r)

    @rule(
        uid=users_b,
        age=st.integers(0, 99),
        form=st.sampled_from(["path", "pathless", "extension"]),
        as_text=st.booleans(),
    )
    def set_age(self, uid: str, age: int, form: str, as_text: bool) -> None:
        """The custom property, in each form Entra sends (full-URN path, path-less URN key,
        the extension object), as a number or as its string ("42")."""
        value: Any = str(age) if as_text else age
        if form == "path":
            op = {"op": "Replace", "path": f"{PROPS}:Age", "value": value}
        elif form == "pathless":
            op = {"op": "Replace", "value": {f"{PROPS}:Age": value}}
        else:
            op = {"op": "Replace", "value": {PROPS: {"Age": value}}}
        r = self._patch(f"/Users/{uid}", op)
        if uid not in self.users:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 200, r.text
        assert r.json()[PROPS]["Age"] == age
        user = self.users[uid]
        user.age = age
        self._saw(uid, r)

    @rule(uid=users_b, name=names, title=st.sampled_from(["Dev", "Ops", None]))
    def replace_user(self, uid: str, name: str, title: str | None) -> None:
        user_name = self.prefix + name
        body: dict[str, Any] = {"schemas": [USER], "userName": user_name}
        if title is not None:
            body["title"] = title
        r = self.client.put(f"/Users/{uid}", json=body)
        if uid not in self.users:
            assert r.status_code == 404, r.text
            return
        if self._taken(self.users, user_name, "user_name", but=uid):
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 200, r.text
        user = self.users[uid]
        user.user_name, user.title, user.age = user_name, title, None
        self._saw(uid, r)

    @rule(uid=consumes(users_b))
    def delete_user(self, uid: str) -> None:
        r = self.client.delete(f"/Users/{uid}")
        if uid not in self.users:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 204, r.text
        del self.users[uid]
        self.gone[uid] = "Users"
        for g in self.groups.values():
            if uid in g.members:
                g.members.discard(uid)
                g.etag = ""  # changed: its version moved; read again below

    # -- groups -------------------------------------------------------------------------------
    @rule(target=groups_b, name=names, members=st.lists(users_b, max_size=3))
    def create_group(self, name: str, members: list[str]) -> Any:
        display = self.prefix + name
        body = {
            "schemas": [GROUP],
            "displayName": display,
            "members": [{"value": m} for m in members],
        }
        r = self.client.post("/Groups", json=body)
        if self._taken(self.groups, display, "display_name"):
            assert r.status_code == 409, r.text
            return multiple()
        if any(m not in self.users for m in members):
            assert r.status_code == 400, r.text  # a member that does not exist
            return multiple()
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        self.groups[gid] = ModelGroup(display, set(members), r.headers["etag"])
        return gid

    @rule(gid=groups_b, members=st.lists(users_b, min_size=1, max_size=4))
    def add_members(self, gid: str, members: list[str]) -> None:
        value = [{"value": m} for m in members]
        r = self._patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": value})
        if gid not in self.groups:
            assert r.status_code == 404, r.text
            return
        if any(m not in self.users for m in members):
            assert r.status_code == 400, r.text  # nothing added, not even the others
            return
        assert r.status_code == 204, r.text
        self.groups[gid].members |= set(members)
        self.groups[gid].etag = ""

    @rule(gid=groups_b, members=st.lists(users_b, min_size=1, max_size=4))
    def remove_members(self, gid: str, members: list[str]) -> None:
        """Entra's remove-with-value: only the listed members go; absent ones are ignored."""
        value = [{"value": m} for m in members]
        r = self._patch(f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": value})
        if gid not in self.groups:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 204, r.text
        self.groups[gid].members -= set(members)
        self.groups[gid].etag = ""

    @rule(gid=groups_b, name=names)
    def rename_group(self, gid: str, name: str) -> None:
        display = self.prefix + name
        r = self._patch(
            f"/Groups/{gid}", {"op": "Replace", "path": "displayName", "value": display}
        )
        if gid not in self.groups:
            assert r.status_code == 404, r.text
            return
        if self._taken(self.groups, display, "display_name", but=gid):
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 204, r.text
        self.groups[gid].display_name = display
        self.groups[gid].etag = ""

    @rule(gid=consumes(groups_b))
    def delete_group(self, gid: str) -> None:
        r = self.client.delete(f"/Groups/{gid}")
        if gid not in self.groups:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 204, r.text
        del self.groups[gid]
        self.gone[gid] = "Groups"

    # -- what must hold after every step --------------------------------------------------------
    @invariant()
    def groups_match(self) -> None:
        for gid, g in self.groups.items():
            r = self.client.get(f"/Groups/{gid}")
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["displayName"] == g.display_name
            assert {m["value"] for m in doc.get("members", [])} == g.members, gid
            if g.etag:
                assert r.headers["etag"] == g.etag  # unchanged since it was last written
            g.etag = r.headers["etag"]

    @invariant()
    def users_match(self) -> None:
        for uid, u in self.users.items():
            r = self.client.get(f"/Users/{uid}")
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["userName"] == u.user_name
            assert doc.get("active") is u.active
            assert doc.get("title") == u.title
            assert doc.get(PROPS, {}).get("Age") == u.age
            tag, now = r.headers["etag"], self._groups_of(uid)
            if now == u.groups:
                assert tag == u.etag  # neither the user nor its groups changed
            else:  # its groups did (members, a group's name): a new tag, the same version
                assert tag != u.etag and _version(tag) == _version(u.etag), (tag, u.etag)
            assert doc["meta"]["version"] == tag
            u.etag, u.groups = tag, now
            want = {gid for gid, g in self.groups.items() if uid in g.members}
            assert {g["value"] for g in doc.get("groups", [])} == want, uid

    @invariant()
    def probes_and_counts_match(self) -> None:
        for uid, u in list(self.users.items())[:3]:
            found = self.client.get(
                "/Users", params={"filter": f'userName eq "{u.user_name.upper()}"'}
            )
            assert [x["id"] for x in found.json()["Resources"]] == [uid]
        listed = self.client.get("/Users", params={"filter": f'userName sw "{self.prefix}"'})
        assert listed.json()["totalResults"] == len(self.users)
        listed = self.client.get("/Groups", params={"filter": f'displayName sw "{self.prefix}"'})
        assert listed.json()["totalResults"] == len(self.groups)
        # The typed property filters in SQL as the model says (numbers, not strings: 9 < 10).
        for bound in (9, 50):
            flt = f'userName sw "{self.prefix}" and {PROPS}:Age gt {bound}'
            found = self.client.get("/Users", params={"filter": flt}).json()
            want = {k for k, u in self.users.items() if u.age is not None and u.age > bound}
            assert {x["id"] for x in found.get("Resources", [])} == want, flt
        # The latest deletes, each on its own endpoint (a deleted group was asked for at
        # /Users, where a 404 was certain whatever the group's own endpoint answered).
        for rid, kind in list(self.gone.items())[-3:]:
            assert self.client.get(f"/{kind}/{rid}").status_code == 404, (kind, rid)


def test_random_operation_sequences_match_the_model(any_database_url: str, tmp_path: Path) -> None:
    props = {"IdentificationNumber": "String", "Age": "Integer"}
    with provisioned_server(any_database_url, log_dir=tmp_path, user_properties=props) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            Directory.client = c
            run_state_machine_as_test(
                Directory,
                settings=settings(
                    max_examples=EXAMPLES,
                    stateful_step_count=25,
                    deadline=None,
                    derandomize="SCIMD_FUZZ_EXAMPLES" not in os.environ,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
