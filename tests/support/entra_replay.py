"""Replay engine for the Microsoft Entra ID request sequence in ``replay.json``.

The replay file (see ``shared/entra/facts.md`` section 11) is a JSON array of steps. Each step
is one HTTP request Entra ID sends to a SCIM server, plus what the response must look like.
This module turns those steps into real requests against a running server and reports, step by
step, what did not match. It has no pytest dependency so it can also drive a server by hand.

Vocabulary:

* *variables* -- ``{name}`` placeholders in paths, headers, bodies and expected values. They are
  generated from the ``vars`` descriptions of the first step (fresh GUIDs for every run) or
  captured from earlier responses (``capture``).
* *selectors* -- the small JSONPath subset used by ``expect`` and ``capture``:
  ``$.a.b``, ``$.a[0].b``, ``$["urn:...:UserProperties"].Prop`` and the filter form
  ``$.emails[?(@.type=='work')].value`` (first matching element).
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

Json = Any
"""A decoded JSON value (dict, list, str, int, float, bool or None)."""

Step = dict[str, Any]
"""One decoded step of the replay file."""

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SIBLING_REPLAY_PATH: Final = Path("..") / "shared" / "entra" / "replay.json"
IN_REPO_REPLAY_PATH: Final = Path("tests") / "data" / "entra" / "replay.json"

PRESENT: Final = "<present>"
ABSENT: Final = "<absent>"
NON_EMPTY: Final = "<non-empty>"

# ``{name}`` or ``{guid:N}``; names are identifiers so JSON braces never match.
VARIABLE_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?::[0-9]+)?)\}")
GUID_VARIABLE_RE: Final = re.compile(r"guid:[0-9]+")
# A trailing " (explanation)" in a variable description is a comment, not part of the value.
TRAILING_COMMENT_RE: Final = re.compile(r"\s+\([^()]*\)\s*$")
CASE_FORM_RE: Final = re.compile(r"(upper|lower)-case form of \{([A-Za-z_][A-Za-z0-9_]*)\}", re.I)

REQUIRED_STEP_KEYS: Final = ("name", "method", "path", "expect_status")
BODY_PREVIEW_CHARS: Final = 2000


class ReplayError(Exception):
    """Base class of the errors this module raises."""


class UnknownVariableError(ReplayError, KeyError):
    """A ``{name}`` placeholder has no value (undefined, or its capture step failed)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"variable {{{self.name}}} has no value (undefined, or its capture step failed)"


class SelectorError(ReplayError, ValueError):
    """A selector string is not in the supported JSONPath subset."""


# --------------------------------------------------------------------------------------------
# Replay file
# --------------------------------------------------------------------------------------------


def replay_path(repo_root: Path | None = None) -> Path:
    """Return the replay file: ``../shared/entra/replay.json`` if present, else the repo copy."""
    root = REPO_ROOT if repo_root is None else repo_root
    sibling = root / SIBLING_REPLAY_PATH
    if sibling.is_file():
        return sibling.resolve()
    return root / IN_REPO_REPLAY_PATH


def load_steps(path: Path | str) -> list[Step]:
    """Load and sanity-check the steps of a replay file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ReplayError(f"{path}: expected a JSON array of steps, got {type(data).__name__}")
    for index, step in enumerate(data):
        if not isinstance(step, dict):
            raise ReplayError(f"{path}: step {index} is not a JSON object")
        missing = [key for key in REQUIRED_STEP_KEYS if key not in step]
        if missing:
            raise ReplayError(f"{path}: step {index} ({step.get('name')!r}) lacks {missing}")
    return data


def check_steps(steps: list[Step], given: Iterable[str] = ("token",)) -> list[str]:
    """Statically check a replay file; return one message per problem found.

    Every placeholder must be generated (``vars``), given by the caller (``given``), a
    ``{guid:N}``, or captured by an *earlier* step; every selector must parse.
    """
    problems: list[str] = []
    names = [str(step["name"]) for step in steps]
    problems.extend(f"duplicate step name {n!r}" for n in sorted(set(names)) if names.count(n) > 1)
    known = set(variable_specs(steps)) | set(given)
    for step in steps:
        where = f"step {step['name']!r}"
        used = referenced_variables([step["path"], step.get("headers"), step.get("body")])
        used |= referenced_variables(list((step.get("expect") or {}).items()))
        for name in sorted(used):
            if name not in known and not GUID_VARIABLE_RE.fullmatch(name):
                problems.append(f"{where}: {{{name}}} is neither generated nor captured earlier")
        for selector in [*(step.get("expect") or {}), *(step.get("capture") or {}).values()]:
            try:
                parse_selector(selector)
            except SelectorError as error:
                problems.append(f"{where}: {error}")
        known |= set(step.get("capture") or {})
    return problems


def variable_specs(steps: Iterable[Step]) -> dict[str, str]:
    """Merge the ``vars`` descriptions of all steps (by convention only the first has them)."""
    specs: dict[str, str] = {}
    for step in steps:
        specs.update(step.get("vars") or {})
    return specs


# --------------------------------------------------------------------------------------------
# Variables
# --------------------------------------------------------------------------------------------


def new_guid() -> str:
    """Return a fresh lower-case uuid4 string."""
    return str(uuid.uuid4())


def new_bad_token() -> str:
    """Return a random string that no server would have issued as a token."""
    return "invalid-" + secrets.token_urlsafe(24)


def generate_variables(
    specs: Mapping[str, str],
    given: Mapping[str, Any],
    *,
    guid_factory: Callable[[], str] = new_guid,
    bad_token_factory: Callable[[], str] = new_bad_token,
) -> dict[str, Any]:
    """Generate a fresh value for every variable described in ``specs``.

    ``given`` values (at least ``token``) win over descriptions. A description is read as:

    * ``"upper-case form of {x}"`` / ``"lower-case form of {x}"`` -- transform of ``x``;
    * a template containing ``{guid:N}`` or ``{x}`` -- substituted; a trailing parenthesised
      comment is dropped (``"Test_User_{guid:1}@testuser.com (note)"``);
    * otherwise a description mentioning a GUID -- a fresh GUID;
    * otherwise one saying "not a valid" (token) -- a random string.

    ``{guid:N}`` yields one fresh GUID per distinct ``N``; the result also holds those under
    the key ``"guid:N"`` so steps may use them directly.
    """
    values: dict[str, Any] = dict(given)
    resolving: list[str] = []

    def resolve(name: str) -> Any:
        if name in values:
            return values[name]
        if GUID_VARIABLE_RE.fullmatch(name):
            values[name] = guid_factory()
            return values[name]
        if name not in specs:
            raise UnknownVariableError(name)
        if name in resolving:
            cycle = " -> ".join([*resolving[resolving.index(name) :], name])
            raise ReplayError(f"variable definitions form a cycle: {cycle}")
        resolving.append(name)
        try:
            values[name] = derive(name, specs[name])
        finally:
            resolving.pop()
        return values[name]

    def derive(name: str, description: str) -> Any:
        text = TRAILING_COMMENT_RE.sub("", description).strip()
        case_form = CASE_FORM_RE.fullmatch(text)
        if case_form:
            base = str(resolve(case_form.group(2)))
            return base.upper() if case_form.group(1).lower() == "upper" else base.lower()
        if VARIABLE_RE.search(text):
            return VARIABLE_RE.sub(lambda match: str(resolve(match.group(1))), text)
        if "guid" in text.lower():
            return guid_factory()
        if "not a valid" in text.lower():
            return bad_token_factory()
        raise ReplayError(f"cannot derive variable {name!r} from description {description!r}")

    for name in specs:
        resolve(name)
    return values


def substitute(value: Json, variables: Mapping[str, Any]) -> Json:
    """Replace ``{name}`` placeholders in ``value``, recursing into lists and objects.

    A string that is exactly ``"{name}"`` becomes the variable's value with its own type;
    placeholders inside longer strings are interpolated with ``str()``. Object keys are
    substituted too. Raises :class:`UnknownVariableError` for a placeholder without value.
    """
    if isinstance(value, str):
        whole = VARIABLE_RE.fullmatch(value)
        if whole:
            return _lookup(variables, whole.group(1))
        return VARIABLE_RE.sub(lambda match: str(_lookup(variables, match.group(1))), value)
    if isinstance(value, list):
        return [substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {
            substitute(key, variables): substitute(item, variables) for key, item in value.items()
        }
    return value


def referenced_variables(value: Json) -> set[str]:
    """Return the names of all ``{name}`` placeholders anywhere in ``value``."""
    if isinstance(value, str):
        return set(VARIABLE_RE.findall(value))
    names: set[str] = set()
    if isinstance(value, list):
        for item in value:
            names |= referenced_variables(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            names |= referenced_variables(key) | referenced_variables(item)
    return names


def _lookup(variables: Mapping[str, Any], name: str) -> Any:
    if name not in variables:
        raise UnknownVariableError(name)
    return variables[name]


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def build_path(template: str, variables: Mapping[str, Any]) -> str:
    """Substitute and percent-encode a step path such as ``/Users?filter=userName eq "{x}"``.

    The template is split into path and ``key=value`` query items *before* substitution, so a
    variable value containing ``&``, ``=`` or ``?`` cannot change the URL's structure. The
    path keeps its ``/``; query keys and values are fully encoded (space ``%20``, ``"``
    ``%22``).
    """
    raw_path, has_query, query = template.partition("?")
    encoded = quote(str(substitute(raw_path, variables)), safe="/")
    if not has_query:
        return encoded
    items: list[str] = []
    for item in query.split("&"):
        key, has_value, value = item.partition("=")
        encoded_item = quote(str(substitute(key, variables)), safe="")
        if has_value:
            encoded_item += "=" + quote(str(substitute(value, variables)), safe="")
        items.append(encoded_item)
    return encoded + "?" + "&".join(items)


def build_url(base_url: str, template: str, variables: Mapping[str, Any]) -> str:
    """Join the SCIM base URL and an encoded step path (no double slash)."""
    return base_url.rstrip("/") + build_path(template, variables)


def build_headers(step: Step, variables: Mapping[str, Any]) -> dict[str, str]:
    """Default headers of a step (bearer token; SCIM content type with a body) plus overrides.

    Step ``headers`` replace defaults case-insensitively.
    """
    headers: dict[str, str] = {"Authorization": "Bearer {token}"}
    if step.get("body") is not None:
        headers["Content-Type"] = "application/scim+json"
    for name, value in (step.get("headers") or {}).items():
        for existing in [key for key in headers if key.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return {name: str(substitute(value, variables)) for name, value in headers.items()}


def build_body(step: Step, variables: Mapping[str, Any]) -> bytes | None:
    """Serialise the step body after substitution, or ``None`` when the step has none."""
    body = step.get("body")
    if body is None:
        return None
    return json.dumps(substitute(body, variables)).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """Select member ``name`` of an object."""

    name: str


@dataclass(frozen=True)
class Index:
    """Select element ``index`` of an array (negative counts from the end)."""

    index: int


@dataclass(frozen=True)
class Filter:
    """Select the first array element whose sub-path ``path`` equals ``value``."""

    path: tuple[str, ...]
    value: Json


Segment = Key | Index | Filter

_NAME_RE: Final = re.compile(r"[^.\[\]\s]+")
_INDEX_RE: Final = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_FILTER_RE: Final = re.compile(
    r"""\[\?\(\s*@((?:\.[A-Za-z_$][\w$]*)+)\s*==\s*
        ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|true|false|null|-?[0-9]+(?:\.[0-9]+)?)
        \s*\)\]""",
    re.X,
)
_QUOTED_KEY_RE: Final = re.compile(r"""\[\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*\]""")


def parse_selector(selector: str) -> tuple[Segment, ...]:
    """Parse a selector of the supported JSONPath subset into segments."""
    if not selector.startswith("$"):
        raise SelectorError(f"selector {selector!r} must start with '$'")
    segments: list[Segment] = []
    position = 1
    while position < len(selector):
        rest = selector[position:]
        if rest.startswith("."):
            name = _NAME_RE.match(selector, position + 1)
            if not name:
                raise SelectorError(f"selector {selector!r}: expected a name at {position + 1}")
            segments.append(Key(name.group()))
            position = name.end()
        elif filter_match := _FILTER_RE.match(selector, position):
            path = tuple(filter_match.group(1).split(".")[1:])
            segments.append(Filter(path, _parse_literal(filter_match.group(2))))
            position = filter_match.end()
        elif index_match := _INDEX_RE.match(selector, position):
            segments.append(Index(int(index_match.group(1))))
            position = index_match.end()
        elif key_match := _QUOTED_KEY_RE.match(selector, position):
            segments.append(Key(_parse_literal(key_match.group(1))))
            position = key_match.end()
        else:
            raise SelectorError(f"selector {selector!r}: cannot parse {rest!r}")
    return tuple(segments)


def _parse_literal(text: str) -> Json:
    if text[0] == "'":
        # Single-quoted: unescape \' and \\, everything else verbatim.
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return json.loads(text)


def _substitute_segment(segment: Segment, variables: Mapping[str, Any]) -> Segment:
    if isinstance(segment, Key):
        return Key(str(substitute(segment.name, variables)))
    if isinstance(segment, Filter):
        return Filter(segment.path, substitute(segment.value, variables))
    return segment


@dataclass(frozen=True)
class Lookup:
    """Outcome of applying a selector: the value if ``found``, else ``reason`` it is missing."""

    found: bool
    value: Json = None
    reason: str = ""


def select(document: Json, selector: str, variables: Mapping[str, Any] | None = None) -> Lookup:
    """Apply ``selector`` to ``document``; ``{name}`` placeholders in it are substituted first.

    Placeholders are substituted into the parsed names and filter literals (not the selector
    text), so values containing quotes or brackets are safe.
    """
    segments = parse_selector(selector)
    if variables is not None:
        segments = tuple(_substitute_segment(segment, variables) for segment in segments)
    current = document
    where = "$"
    for segment in segments:
        if isinstance(segment, Key):
            if not isinstance(current, dict):
                return Lookup(False, reason=f"{where} is not an object")
            if segment.name not in current:
                return Lookup(False, reason=f"{where} has no member {segment.name!r}")
            current = current[segment.name]
            where = f"{where}[{segment.name!r}]"
        elif isinstance(segment, Index):
            if not isinstance(current, list):
                return Lookup(False, reason=f"{where} is not an array")
            if not -len(current) <= segment.index < len(current):
                return Lookup(
                    False, reason=f"{where} has {len(current)} element(s), no [{segment.index}]"
                )
            current = current[segment.index]
            where = f"{where}[{segment.index}]"
        else:
            if not isinstance(current, list):
                return Lookup(False, reason=f"{where} is not an array")
            match = next((item for item in current if _filter_matches(item, segment)), _NO_MATCH)
            condition = f"@.{'.'.join(segment.path)}=={segment.value!r}"
            if match is _NO_MATCH:
                return Lookup(False, reason=f"no element of {where} has {condition}")
            current = match
            where = f"{where}[?({condition})]"
    return Lookup(True, current)


_NO_MATCH: Final = object()


def _filter_matches(item: Json, segment: Filter) -> bool:
    current = item
    for name in segment.path:
        if not isinstance(current, dict) or name not in current:
            return False
        current = current[name]
    return json_equal(current, segment.value)


def json_equal(left: Json, right: Json) -> bool:
    """Compare JSON values strictly: ``true`` is not ``1`` and ``"404"`` is not ``404``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


def check_expectation(
    document: Json, selector: str, expected: Json, variables: Mapping[str, Any]
) -> str | None:
    """Check one ``expect`` entry; return ``None`` when it holds, else what mismatched.

    ``<present>``: found and not null. ``<absent>``: missing, null, or no array element matches
    a filter. ``<non-empty>``: present and, for strings/arrays/objects, of non-zero length.
    Any other value is compared with :func:`json_equal` after placeholder substitution.
    """
    lookup = select(document, selector, variables)
    actual = lookup.value
    if expected == ABSENT:
        if not lookup.found or actual is None:
            return None
        return f"{selector}: expected <absent>, got {_preview(actual)}"
    if not lookup.found:
        return f"{selector}: expected {_preview(expected)}, but {lookup.reason}"
    if expected == PRESENT:
        return None if actual is not None else f"{selector}: expected <present>, got null"
    if expected == NON_EMPTY:
        empty = actual is None or (isinstance(actual, str | list | dict) and len(actual) == 0)
        return f"{selector}: expected <non-empty>, got {_preview(actual)}" if empty else None
    wanted = substitute(expected, variables)
    if json_equal(actual, wanted):
        return None
    return f"{selector}: expected {_preview(wanted)}, got {_preview(actual)}"


def _preview(value: Json, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """Outcome of one replayed step.

    ``ok`` is the plain outcome. A failed step marked ``optional`` in the file is a *warning*
    (``warning`` true, ``failed`` false); only ``failed`` steps should fail a test.
    """

    name: str
    ok: bool
    status: int | None
    detail: str
    optional: bool = False
    method: str = ""
    url: str = ""
    position: int | None = None
    """1-based position in the sequence when produced by :meth:`ReplayRunner.run_all`."""

    @property
    def failed(self) -> bool:
        """True when the step failed and is not optional."""
        return not self.ok and not self.optional

    @property
    def warning(self) -> bool:
        """True when the step failed but is optional."""
        return not self.ok and self.optional


class ReplayRunner:
    """Replays steps against ``base_url`` (the SCIM base, e.g. ``http://host/scim/v2``).

    ``steps`` defaults to the file found by :func:`replay_path`. Variables are generated at
    construction and again at every :meth:`run_all`, so each full run uses fresh GUIDs.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        client: httpx.Client,
        steps: list[Step] | None = None,
        *,
        given: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.client = client
        self.steps = load_steps(replay_path()) if steps is None else steps
        self._given: dict[str, Any] = {**(given or {}), "token": token}
        self.variables: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Forget captured values and generate fresh variables."""
        self.variables = generate_variables(variable_specs(self.steps), self._given)

    def run_all(self) -> list[StepResult]:
        """Run every step in order with fresh variables; later steps run even after failures."""
        self.reset()
        return [
            replace(self.run_step(step), position=position)
            for position, step in enumerate(self.steps, start=1)
        ]

    def run_step(self, step: Step) -> StepResult:
        """Send one step's request, check its expectations and record its captures."""
        name = str(step["name"])
        optional = bool(step.get("optional", False))
        method = str(step["method"]).upper()
        url = str(step["path"])
        request_body: bytes | None = None
        try:
            url = build_url(self.base_url, step["path"], self.variables)
            headers = build_headers(step, self.variables)
            request_body = build_body(step, self.variables)
            response = self.client.request(method, url, headers=headers, content=request_body)
        except (ReplayError, httpx.HTTPError) as error:
            detail = f"{method} {url}: request not sent: {type(error).__name__}: {error}"
            return StepResult(name, False, None, detail, optional, method, url)

        document, body_note = _decode_body(response)
        problems: list[str] = []
        expected_status = [int(status) for status in step["expect_status"]]
        if response.status_code not in expected_status:
            problems.append(f"status {response.status_code}, expected one of {expected_status}")
        for selector, expected in (step.get("expect") or {}).items():
            try:
                problem = check_expectation(document, selector, expected, self.variables)
            except ReplayError as error:
                problem = f"{selector}: {error}"
            if problem:
                problems.append(problem)
        for variable, selector in (step.get("capture") or {}).items():
            # A failed capture unsets the variable so dependent steps fail with a clear reason
            # instead of silently reusing a value from an earlier run.
            self.variables.pop(variable, None)
            try:
                lookup = select(document, selector, self.variables)
            except ReplayError as error:
                problems.append(f"capture {{{variable}}} <- {selector}: {error}")
                continue
            if lookup.found and lookup.value is not None:
                self.variables[variable] = lookup.value
            else:
                problems.append(f"capture {{{variable}}} <- {selector}: {lookup.reason or 'null'}")

        if not problems:
            return StepResult(name, True, response.status_code, "", optional, method, url)
        lines = [f"{method} {url} -> {response.status_code}", *(f"  - {p}" for p in problems)]
        if request_body is not None:
            lines.append(f"  request body: {request_body.decode('utf-8')[:BODY_PREVIEW_CHARS]}")
        lines.append(f"  response body{body_note}: {_body_preview(response)}")
        return StepResult(
            name, False, response.status_code, "\n".join(lines), optional, method, url
        )


def _decode_body(response: httpx.Response) -> tuple[Json, str]:
    """Return the decoded JSON body (``None`` when empty or not JSON) and a note for reports."""
    if not response.content:
        return None, " (empty)"
    try:
        return json.loads(response.content), ""
    except ValueError:
        return None, " (not JSON)"


def _body_preview(response: httpx.Response) -> str:
    text = response.content.decode("utf-8", errors="replace")
    return text if len(text) <= BODY_PREVIEW_CHARS else text[:BODY_PREVIEW_CHARS] + "..."


def format_report(results: Iterable[StepResult]) -> str:
    """Render results as a readable report: one header line per step, details indented."""
    lines: list[str] = []
    for result in results:
        verdict = "ok" if result.ok else ("WARN (optional)" if result.optional else "FAIL")
        number = f"{result.position:>3}." if result.position is not None else "   -"
        lines.append(f"{number} {verdict:<15} {result.name} [status {result.status}]")
        if result.detail:
            lines.extend("       " + line for line in result.detail.splitlines())
    return "\n".join(lines)
