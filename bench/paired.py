"""Paired runs: how fast a target is against its reference, measured side by side in short
alternating rounds.

``bench/run.py`` measures one target after the other, each for minutes. On this machine the
same code measures up to a third apart a few minutes later (docs/performance.md), so a ratio
of two targets measured minutes apart carries that drift. This starts the subject and the
reference together, seeds both, and then, for each operation and concurrency level, runs
``--rounds`` rounds of ``--requests`` requests against each, in the order AB, BA, AB, ...
Each round's ratio (subject req/s over the reference's, measured a second or two apart) is
reported, with the median and the range of the rounds: a drift of the machine slows both
sides of a pair alike.

    python bench/paired.py --users 10000
    python bench/paired.py --users 10000 --subject scimd-postgres --reference bare-postgres \\
        --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Targets are those of bench/run.py. Servers bind 127.0.0.1; every round is bounded by
``--requests`` and ``--max-seconds``. The report (markdown, and JSON beside it) is written to
``--out`` (default ``bench/results/paired.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import load
import run

DEFAULT_OPS = "post_user,filter_username,get_user,patch_user,list_page,group_add_members"


@dataclass
class Side:
    """One running target and the load generator state that goes with it."""

    name: str
    bench: load.Benchmark
    rounds: dict[tuple[str, int], list[load.OpResult]] = field(default_factory=dict)


@contextlib.contextmanager
def started(name: str, args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """Start target ``name``; yield its Server description and process; stop it afterwards."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"paired-{name}-")))
    port = run.free_port()
    server = run.target_server(name, port, tmp, args, stack)
    log = tmp / "server.log"
    process = run.launch(name, server, log)
    try:
        run.wait_ready(process, server.ready_url, log)
        yield server, process
        if process.poll() is not None:
            raise run.TargetError(f"{name} died during the run:\n{run.tail(log)}")
    finally:
        run.stop(process)


def load_args(args: argparse.Namespace, server: run.Server, pid: int, name: str) -> Any:
    argv = [
        "--base-url",
        server.base_url,
        f"--token={server.token}",
        "--label",
        name,
        "--requests",
        str(args.requests),
        "--max-seconds",
        str(args.max_seconds),
        "--concurrency",
        args.concurrency,
        "--server-pid",
        str(pid),
        "--wait-quiet",
        str(args.wait_quiet),
        "--ops",
        args.ops,
    ]
    if server.cmdline_match:
        argv.append(f"--server-cmdline-match={server.cmdline_match}")
    return load.parse_args(argv)


async def measure(sides: list[Side], args: argparse.Namespace) -> None:
    for side in sides:
        await side.bench.seed_users(args.users, args.seed_max_seconds)
        print(f"{side.name}: {len(side.bench.users)} users seeded", flush=True)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    for op in ops:
        # Each member add leaves 100 memberships: over many rounds they would pile up past what
        # bench/run.py leaves (2,000 requests per level) and slow the adds that follow.
        requests = args.group_requests if op.startswith("group_") else args.requests
        for level in levels:
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                rows: list[str] = []
                for side in order:
                    side.bench.requests = requests
                    # One row per operation, but four for group_add_large.
                    for result in await side.bench.run_op(op, level):
                        side.rounds.setdefault((result.op, level), []).append(result)
                        rows.append(result.op)
                for row in dict.fromkeys(rows):
                    subject, reference = (s.rounds[(row, level)][-1] for s in sides)
                    ratio = subject.rps / reference.rps if reference.rps else 0.0
                    print(
                        f"{row:<22} c={level:<3} round {r + 1}: {sides[0].name}"
                        f" {subject.rps:>8.0f}  {sides[1].name} {reference.rps:>8.0f} req/s"
                        f"  ratio {ratio:.2f}  errors {subject.errors}/{reference.errors}",
                        flush=True,
                    )


def summary(sides: list[Side]) -> list[dict[str, Any]]:
    rows = []
    subject, reference = sides
    for key, mine in subject.rounds.items():
        theirs = reference.rounds[key]
        ratios = [a.rps / b.rps if b.rps else 0.0 for a, b in zip(mine, theirs, strict=True)]
        rows.append(
            {
                "op": key[0],
                "concurrency": key[1],
                "ratios": [round(x, 3) for x in ratios],
                "ratio_median": round(statistics.median(ratios), 3),
                "subject_rps": round(statistics.median(r.rps for r in mine), 1),
                "reference_rps": round(statistics.median(r.rps for r in theirs), 1),
                "subject_p50_ms": round(statistics.median(r.p50_ms for r in mine), 2),
                "subject_p99_ms": round(statistics.median(r.p99_ms for r in mine), 2),
                "reference_p50_ms": round(statistics.median(r.p50_ms for r in theirs), 2),
                "reference_p99_ms": round(statistics.median(r.p99_ms for r in theirs), 2),
                "errors": [sum(r.errors for r in mine), sum(r.errors for r in theirs)],
                "other_cpu_max": round(max(r.other_cpu for r in mine + theirs), 2),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, label: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Paired runs: {args.subject} against {args.reference}",
        "",
        f"{now}; code {label}; {args.users:,} users seeded into each; {args.rounds} rounds of "
        f"{args.requests} requests per side ({args.group_requests} for the group operations), "
        "alternating AB/BA; "
        f"Python {platform.python_version()}.",
        "",
        f"| operation | c | ratio median | ratio range | {args.subject} req/s (p50/p99 ms) "
        f"| {args.reference} req/s (p50/p99 ms) | errors | other CPU max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['op']} | {row['concurrency']} | **{row['ratio_median']:.2f}** "
            f"| {min(row['ratios']):.2f}-{max(row['ratios']):.2f} "
            f"| {row['subject_rps']:,.0f} ({row['subject_p50_ms']}/{row['subject_p99_ms']}) "
            f"| {row['reference_rps']:,.0f} ({row['reference_p50_ms']}/"
            f"{row['reference_p99_ms']}) | {row['errors'][0]}/{row['errors'][1]} "
            f"| {row['other_cpu_max']} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=10_000, help="users seeded into each")
    parser.add_argument("--subject", default="scimd-sqlite", choices=run.ALL_TARGETS)
    parser.add_argument("--reference", default="bare", choices=run.ALL_TARGETS)
    parser.add_argument("--ops", default=DEFAULT_OPS, help="comma-separated operations")
    parser.add_argument("--concurrency", default="8,32", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side and level")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument(
        "--group-requests",
        type=int,
        default=333,
        help="requests per round of the group operations (6 rounds of 333: bench/run.py's 2,000)",
    )
    parser.add_argument("--max-seconds", type=float, default=10.0, help="cap per round")
    parser.add_argument("--seed-max-seconds", type=float, default=900.0)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each round, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("SCIMD_BENCH_POSTGRES_URL", ""))
    parser.add_argument("--code-label", default="", help="recorded as the code measured")
    parser.add_argument("--out", default=str(run.RESULTS_DIR / "paired.md"))
    args = parser.parse_args(argv)
    if args.subject == args.reference:
        parser.error("--subject and --reference must differ")
    if args.rounds < 1 or args.requests < 1 or args.group_requests < 1:
        parser.error("--rounds, --requests and --group-requests must be positive")
    # What bench/run.py's target_server reads besides these.
    args.scim2_max_users = 10_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    label = args.code_label or run.git_commit()
    with contextlib.ExitStack() as stack:
        sides = []
        for name in (args.subject, args.reference):
            server, process = stack.enter_context(started(name, args, stack))
            bench = load.Benchmark(load_args(args, server, process.pid, name))
            sides.append(Side(name, bench))
        try:
            import uvloop
        except ImportError:
            asyncio.run(measure(sides, args))
        else:
            uvloop.run(measure(sides, args))
    rows = summary(sides)
    text = markdown(rows, args, label)
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    document = {"subject": args.subject, "reference": args.reference, "code": label}
    document |= {"users": args.users, "rounds": args.rounds, "requests": args.requests}
    out.with_suffix(".json").write_text(json.dumps({**document, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
