"""Soak: one ``scimd serve`` under rounds of load, its memory read after each round.

A server provisioned for weeks must not grow without bound. This starts one server (SQLite in a
temporary directory unless ``--database-url`` says otherwise), seeds users, then runs rounds of
``bench/load.py`` (reads, PATCHes, pages and member adds; each round seeds a few more users) and
after each prints the server's anonymous resident memory (``RssAnon``: the heap, not the
database pages SQLite maps from the file, which count in ``VmRSS`` and grow with the file) next
to each operation's req/s and errors. Bounded by ``--rounds`` and ``--max-seconds`` per
measurement; loopback only.

    python bench/soak.py --rounds 12 --requests 6000

Memory that levels off after the first rounds (caches filled) is fine; memory that grows by
about the same amount every round is a leak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run

DEFAULT_OPS = "filter_username,get_user,patch_user,list_page,group_add_members"


def memory_kib(pid: int) -> dict[str, int]:
    """RssAnon and VmRSS of a process, in KiB (Linux ``/proc``)."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def _mib(memory: dict[str, int]) -> str:
    return f"RssAnon {memory['RssAnon'] / 1024:7.1f} MiB  VmRSS {memory['VmRSS'] / 1024:7.1f} MiB"


def load_round(
    server: run.Server, args: argparse.Namespace, seed_users: int, ops: str, out: Path
) -> list[dict[str, Any]]:
    """One run of bench/load.py; its results (one per operation)."""
    argv = [
        sys.executable,
        str(Path(__file__).with_name("load.py")),
        "--base-url",
        server.base_url,
        "--token",
        server.token,
        "--seed-users",
        str(seed_users),
        "--ops",
        ops,
        "--requests",
        str(args.requests),
        "--concurrency",
        str(args.concurrency),
        "--max-seconds",
        str(args.max_seconds),
        "--wait-quiet",
        "0",
        "--json-out",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.max_seconds * 20)
    if done.returncode != 0:
        raise SystemExit(f"bench/load.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    results: list[dict[str, Any]] = json.loads(out.read_text())["results"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=6000, help="per operation and round")
    parser.add_argument("--seed-users", type=int, default=5000, help="users created first")
    parser.add_argument("--round-users", type=int, default=500, help="users added each round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ops", default=DEFAULT_OPS, help="bench/load.py operations")
    parser.add_argument("--max-seconds", type=float, default=30, help="cap per measurement")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--json-out", help="write the rounds as JSON to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scimd-soak-") as scratch:
        tmp = Path(scratch)
        url = args.database_url or f"sqlite:///{tmp}/soak.db"
        server = run.scimd_server(url, run.free_port(), tmp)
        log = tmp / "serve.log"
        process = run.launch("scimd", server, log)
        rounds: list[dict[str, Any]] = []
        try:
            run.wait_ready(process, server.ready_url, log)
            print(f"started: {_mib(memory_kib(process.pid))}", flush=True)
            load_round(server, args, args.seed_users, "get_user", tmp / "seed.json")
            print(f"seeded {args.seed_users} users: {_mib(memory_kib(process.pid))}", flush=True)
            for n in range(1, args.rounds + 1):
                started = time.monotonic()
                results = load_round(server, args, args.round_users, args.ops, tmp / "round.json")
                memory = memory_kib(process.pid)
                rounds.append({"round": n, "memory_kib": memory, "results": results})
                figures = "  ".join(
                    f"{r['op']} {r['rps']:,.0f}/s {r['errors']} err" for r in results
                )
                took = time.monotonic() - started
                print(
                    f"round {n:>3}  {_mib(memory)}  ({took:4.1f} s)  {figures}",
                    flush=True,
                )
        finally:
            run.stop(process)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
