"""Turn the JSON reports of bench/run.py (one per user count) into the tables of
docs/performance.md.

Each argument is a JSON file written by ``bench/run.py --out X.md`` (``X.json``), optionally
followed by ``=LABEL`` (e.g. ``bench/results/n10k.json=10k``). Measurements re-run separately
(``bench/run.py --targets T --ops OPS --users N --out R.md``) are merged in with
``--override R.json``: their rows replace the same (target, op, concurrency) rows of the report
with the same user count.

Printed, in markdown:

- per user count, every target x operation x concurrency: req/s, p50 and p99 (ms);
- per user count, scimd / bare req/s per operation and concurrency (the 0.5x target), or with
  ``--compact`` one table for all user counts;
- p50 / p99 of ``filter_username`` and ``get_user`` across user counts (the flatness target);
- adding 100 members to the small versus the large group;
- with ``--spread`` (other runs of the same code), the lowest and highest ratio over all runs.

Run::

    python bench/summarize.py bench/results/n10k.json bench/results/n100k.json \\
        bench/results/n1m.json > summary.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

SCIMD = ("scimd-sqlite", "scimd-postgres")
TARGET_ORDER = (
    "scimd-sqlite",
    "scimd-postgres",
    "bare",
    "bare-postgres",
    "scim2-server",
    "scim2-server-cli",
)
FLAT_OPS = ("filter_username", "get_user")

Row = dict[str, Any]


def _floor2(ratio: float) -> float:
    """Two decimals, rounded down: 0.4951 printed as 0.50 beside a star (below 0.50) read as
    a mistake, and was "corrected" by hand."""
    return math.floor(ratio * 100) / 100


def ratio_cell(mine: Row, ref: Row, ok: str, below: str) -> str:
    """``mine``'s req/s over ``ref``'s, marked ``ok`` or ``below`` 0.5; "!" when either row
    had failed requests, which are no throughput to compare (a target answering every request
    401 measured 1.09x)."""
    ratio = mine["rps"] / ref["rps"]
    if mine.get("errors") or ref.get("errors"):
        return f"{_floor2(ratio):.2f}!"
    return f"{_floor2(ratio):.2f}" + (ok if ratio >= 0.5 else below)


def label_of(users: int) -> str:
    if users % 1_000_000 == 0:
        return f"{users // 1_000_000}M"
    if users % 1000 == 0:
        return f"{users // 1000}k"
    return str(users)


def load(path_arg: str) -> tuple[str, dict[str, Any]]:
    path, _, label = path_arg.partition("=")
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return label or label_of(int(doc["users"])), doc


def rows_of(doc: dict[str, Any]) -> dict[tuple[str, str, int], Row]:
    return {
        (target, r["op"], int(r["concurrency"])): r
        for target, run in doc["runs"].items()
        for r in run["results"]
    }


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ms(value: float) -> str:
    return n(value, 1) if value < 100 else n(value, 0)


def ordered_targets(rows: dict[tuple[str, str, int], Row]) -> list[str]:
    present = {t for t, _, _ in rows}
    return [t for t in TARGET_ORDER if t in present] + sorted(present - set(TARGET_ORDER))


def ordered_keys(rows: dict[tuple[str, str, int], Row]) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    for _, op, conc in rows:
        if (op, conc) not in keys:
            keys.append((op, conc))
    return keys


def cell(r: Row | None) -> str:
    if r is None:
        return "-"
    text = f"{n(r['rps'])} / {ms(r['p50_ms'])} / {ms(r['p99_ms'])}"
    if r["errors"]:
        text += f" ({r['errors']} err)"
    return text


def figures_table(label: str, rows: dict[tuple[str, str, int], Row]) -> list[str]:
    targets = ordered_targets(rows)
    out = [
        f"#### {label} users: req/s / p50 ms / p99 ms",
        "",
        "| op | conc | " + " | ".join(targets) + " |",
        "|---|---:|" + "---:|" * len(targets),
    ]
    for op, conc in ordered_keys(rows):
        cells = [cell(rows.get((t, op, conc))) for t in targets]
        out.append(f"| {op} | {conc} | " + " | ".join(cells) + " |")
    return [*out, ""]


def ratio_table(label: str, rows: dict[tuple[str, str, int], Row]) -> list[str]:
    scimds = [t for t in SCIMD if any(k[0] == t for k in rows)]
    if not any(k[0] == "bare" for k in rows) or not scimds:
        return []
    out = [
        f"#### {label} users: req/s as a fraction of bare (target ≥ 0.50; ! marks rows with"
        " failed requests, not comparable)",
        "",
        "| op | conc | " + " | ".join(scimds) + " |",
        "|---|---:|" + "---:|" * len(scimds),
    ]
    for op, conc in ordered_keys(rows):
        bare = rows.get(("bare", op, conc))
        if bare is None or not bare["rps"]:
            continue
        cells = []
        for t in scimds:
            r = rows.get((t, op, conc))
            if r is None:
                cells.append("-")
                continue
            cells.append(ratio_cell(r, bare, " ✓", " ✗"))
        out.append(f"| {op} | {conc} | " + " | ".join(cells) + " |")
    return [*out, ""]


# (scimd target, reference): every scimd target against the SQLite durable limit (the target
# of the issue), and scimd-postgres also against the same bare endpoint on PostgreSQL.
PAIRS = (
    ("scimd-sqlite", "bare"),
    ("scimd-postgres", "bare"),
    ("scimd-postgres", "bare-postgres"),
)


def compact_ratio_table(runs: list[tuple[str, dict[tuple[str, str, int], Row]]]) -> list[str]:
    """scimd / reference req/s for every user count and pair in one table (c=8 / c=32)."""
    columns = [
        (label, target, ref, rows)
        for label, rows in runs
        for target, ref in PAIRS
        if any(k[0] == target for k in rows) and any(k[0] == ref for k in rows)
    ]
    if not columns:
        return []
    concs = sorted({k[2] for _, rows in runs for k in rows})
    out = [
        "#### req/s of scimd as a fraction of the reference, "
        + " / ".join(f"c={c}" for c in concs)
        + " (target ≥ 0.50 of bare; * marks a figure below 0.50, ! rows with failed requests)",
        "",
        "| op | "
        + " | ".join(f"{label} {target} / {ref}" for label, target, ref, _ in columns)
        + " |",
        "|---|" + "---:|" * len(columns),
    ]
    ops: list[str] = []
    for _, rows in runs:
        for _, op, _ in rows:
            if op not in ops:
                ops.append(op)
    for op in ops:
        cells = []
        for _, target, ref, rows in columns:
            parts = []
            for conc in concs:
                mine, bare = rows.get((target, op, conc)), rows.get((ref, op, conc))
                if mine is None or bare is None or not bare["rps"]:
                    parts.append("-")
                    continue
                parts.append(ratio_cell(mine, bare, "", "*"))
            cells.append(" / ".join(parts))
        if any(c.replace("-", "").replace(" / ", "") for c in cells):
            out.append(f"| {op} | " + " | ".join(cells) + " |")
    return [*out, ""]


def flatness_table(runs: list[tuple[str, dict[tuple[str, str, int], Row]]]) -> list[str]:
    labels = [label for label, _ in runs]
    targets = [t for t in TARGET_ORDER if any(k[0] == t for _, rows in runs for k in rows)]
    out = [
        "#### p50 / p99 ms by user count (target: the largest within 1.5x of the smallest)",
        "",
        "| target | op | conc | " + " | ".join(labels) + " | p50 ratio | p99 ratio |",
        "|---|---|---:|" + "---:|" * len(labels) + "---:|---:|",
    ]
    for target in targets:
        for op in FLAT_OPS:
            for conc in sorted({k[2] for _, rows in runs for k in rows if k[1] == op}):
                found = [rows.get((target, op, conc)) for _, rows in runs]
                present = [r for r in found if r is not None]
                if len(present) < 2:
                    continue
                cells = [
                    "-" if r is None else f"{ms(r['p50_ms'])} / {ms(r['p99_ms'])}" for r in found
                ]
                first, last = present[0], present[-1]
                p50 = last["p50_ms"] / first["p50_ms"] if first["p50_ms"] else 0.0
                p99 = last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else 0.0
                out.append(
                    f"| {target} | {op} | {conc} | "
                    + " | ".join(cells)
                    + f" | {p50:.2f} | {p99:.2f} |"
                )
    return [*out, ""]


def group_table(runs: list[tuple[str, dict[tuple[str, str, int], Row]]]) -> list[str]:
    out = [
        "#### Adding (and removing) 100 members: small versus large group, p50 / p99 ms",
        "",
        "| users | target | conc | large group | add, small | add, large | large / small p50 "
        "| remove, small | remove, large |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in runs:
        for target in ordered_targets(rows):
            for conc in sorted({k[2] for k in rows if k[0] == target}):
                add_s = rows.get((target, "group_add_100_small", conc))
                add_l = rows.get((target, "group_add_100_large", conc))
                rem_s = rows.get((target, "group_remove_100_small", conc))
                rem_l = rows.get((target, "group_remove_100_large", conc))
                if add_s is None or add_l is None:
                    continue
                size = add_l["note"].split(" members")[0].replace("group of ", "")
                ratio = add_l["p50_ms"] / add_s["p50_ms"] if add_s["p50_ms"] else 0.0

                def pair(r: Row | None) -> str:
                    if r is None:
                        return "-"
                    text = f"{ms(r['p50_ms'])} / {ms(r['p99_ms'])}"
                    return text + (f" ({r['errors']} err)" if r["errors"] else "")

                out.append(
                    f"| {label} | {target} | {conc} | {size} | {pair(add_s)} | {pair(add_l)} | "
                    f"{ratio:.2f} | {pair(rem_s)} | {pair(rem_l)} |"
                )
    return [*out, ""]


def spread_table(label: str, runs: list[tuple[str, dict[tuple[str, str, int], Row]]]) -> list[str]:
    """The lowest and highest scimd / reference ratio over several runs of one user count."""
    pairs = [
        (target, ref)
        for target, ref in PAIRS
        if all(
            any(k[0] == target for k in rows) and any(k[0] == ref for k in rows) for _, rows in runs
        )
    ]
    if not pairs:
        return []
    out = [
        f"#### {label} users: scimd / reference req/s, lowest-highest over "
        f"{len(runs)} runs ({', '.join(name for name, _ in runs)})",
        "",
        "| op | conc | " + " | ".join(f"{t} / {r}" for t, r in pairs) + " |",
        "|---|---:|" + "---:|" * len(pairs),
    ]
    for op, conc in ordered_keys(runs[0][1]):
        cells = []
        for target, ref in pairs:
            ratios = [
                rows[(target, op, conc)]["rps"] / rows[(ref, op, conc)]["rps"]
                for _, rows in runs
                if (target, op, conc) in rows and rows.get((ref, op, conc), {}).get("rps")
            ]
            if not ratios:
                cells.append("-")
                continue
            low, high = min(ratios), max(ratios)
            cells.append(f"{_floor2(low):.2f}-{_floor2(high):.2f}" + ("" if low >= 0.5 else "*"))
        out.append(f"| {op} | {conc} | " + " | ".join(cells) + " |")
    return [*out, ""]


def progress_table(
    label: str,
    commit: str,
    before: dict[tuple[str, str, int], Row],
    after: dict[tuple[str, str, int], Row],
) -> list[str]:
    """req/s of each scimd target at an earlier commit and now, with the factor."""
    targets = [t for t in SCIMD if any(k[0] == t for k in after) and any(k[0] == t for k in before)]
    if not targets:
        return []
    out = [
        f"#### {label} users: req/s at {commit} -> now (factor)",
        "",
        "| op | conc | " + " | ".join(targets) + " |",
        "|---|---:|" + "---:|" * len(targets),
    ]
    for op, conc in ordered_keys(after):
        cells = []
        for t in targets:
            old, new = before.get((t, op, conc)), after.get((t, op, conc))
            if old is None or new is None or not old["rps"]:
                cells.append("-")
                continue
            cells.append(f"{n(old['rps'])} -> {n(new['rps'])} ({new['rps'] / old['rps']:.1f}x)")
        if any(c != "-" for c in cells):
            out.append(f"| {op} | {conc} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _short(path_arg: str) -> str:
    """``bench/reports/C/n10k.json[=L]`` -> ``C/n10k``: which run a column is."""
    path = Path(path_arg.partition("=")[0])
    return f"{path.parent.name}/{path.stem}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tables for docs/performance.md.")
    parser.add_argument("reports", nargs="+", help="JSON reports of bench/run.py[=LABEL]")
    parser.add_argument(
        "--compact", action="store_true", help="one ratio table for all user counts"
    )
    parser.add_argument(
        "--before",
        action="append",
        default=[],
        help="JSON report of an earlier commit (same user count as a report): a before/after "
        "table of the scimd targets",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="JSON report of re-run measurements replacing the same rows",
    )
    parser.add_argument(
        "--spread",
        action="append",
        default=[],
        help="JSON report of another run of the same code (same user count as a report): the "
        "range of the ratios over all runs",
    )
    args = parser.parse_args(argv)
    runs: list[tuple[str, dict[tuple[str, str, int], Row]]] = []
    headers: list[str] = []
    sources: dict[str, str] = {}
    for arg in args.reports:
        label, doc = load(arg)
        sources[label] = _short(arg)
        rows = rows_of(doc)
        for extra in args.override:
            _, over = load(extra)
            if int(over["users"]) == int(doc["users"]):
                rows.update(rows_of(over))
        runs.append((label, rows))
        problems = "; ".join(f"{t}: {p.splitlines()[0]}" for t, p in doc["problems"].items())
        headers.append(
            f"- {label}: measured {doc.get('date', '?')} at commit {doc.get('commit', '?')}"
            + (f" (not measured: {problems})" if problems else "")
        )
    for extra in args.override:
        label, over = load(extra)
        replaced = sorted({f"{t} {op}" for t, op, _ in rows_of(over)})
        headers.append(
            f"- {label}, re-run ({Path(extra.partition('=')[0]).name}, measured "
            f"{over.get('date', '?')}, commit {over.get('commit', '?')}) replaces: "
            + ", ".join(replaced)
        )
    lines = [*headers, ""]
    for label, rows in runs:
        lines += figures_table(label, rows)
    if args.compact:
        lines += compact_ratio_table(runs)
    else:
        for label, rows in runs:
            lines += ratio_table(label, rows)
    lines += flatness_table(runs)
    lines += group_table(runs)
    for label, rows in runs:
        others = [load(a) for a in args.spread]
        same = [(lbl, doc) for lbl, doc in others if lbl == label]
        if same:
            named = [(sources[label], rows)] + [
                (_short(a), rows_of(doc))
                for a, (lbl, doc) in zip(args.spread, others, strict=True)
                if lbl == label
            ]
            lines += spread_table(label, named)
    for before_arg in args.before:
        label, before = load(before_arg)
        after = next((rows for lbl, rows in runs if lbl == label), None)
        if after is not None:
            lines += progress_table(label, str(before.get("commit", "?")), rows_of(before), after)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
