"""Run the whole SCIM load benchmark with one command, and write a combined report.

For each target it starts the server on a free loopback port, waits until it answers, seeds
``--users`` users and measures every operation of bench/load.py at each concurrency level, then
stops the server. The combined markdown table (target x operation x concurrency: req/s, p50,
p99, errors) is printed and written to ``bench/results/latest.md`` (and the raw figures to
``bench/results/latest.json``).

Targets (``--targets``, comma separated):

``scimd-sqlite``
    ``scimd serve`` on a fresh SQLite file, with a bearer token from ``scimd apps create``.
``scimd-postgres``
    The same on PostgreSQL: ``--postgres-url`` (default ``$SCIMD_BENCH_POSTGRES_URL``; the target
    is skipped when neither is set), e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``,
    names a server and a database to connect to; each run creates a fresh database on that
    server (``CREATE DATABASE scimd_bench_<random>``, so the role needs CREATEDB) and drops it
    afterwards, so runs never see each other's data.
``bare``
    bench/reference_bare.py: Starlette + stdlib sqlite3, the "durable limit" of this stack.
``bare-postgres``
    bench/reference_bare_postgres.py: the same on PostgreSQL (Starlette + psycopg 3's async API,
    a fixed pool of connections), the limit scimd-postgres is measured against. Like
    ``scimd-postgres`` it needs ``--postgres-url`` (skipped otherwise) and gets a fresh database
    of its own, dropped afterwards.
``scim2-server``
    bench/reference_scim2_server.py: python-scim's scim2-server (in-memory storage) under
    uvicorn, the Python peer. Skipped above ``--scim2-max-users`` seeded users (default
    10,000): its list and group operations take seconds per request at that size already.
``scim2-server-cli``
    The same package through its shipped ``scim2-server`` command (threaded wsgiref, HTTP/1.0,
    no keep-alive). Not in the default set.

Run (from the repository root, in the environment where scimd is installed with its ``bench``
extra, e.g. ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --targets bare,scim2-server --users 1000 --requests 300
    .venv/bin/python bench/run.py --users 100000 --targets scimd-sqlite,scimd-postgres,bare \
        --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        --out bench/results/n100k.md

One size per invocation: ``--users N`` seeds N users into every target (over HTTP, about
2,500 users/s here, so ~7 minutes per target at 1,000,000: raise ``--seed-max-seconds``).

The load generator shares the machine with the server under test; compare the targets with
each other (and with ``bare``) rather than reading the figures as absolute capacities.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_TARGETS = "scimd-sqlite,scimd-postgres,bare,bare-postgres,scim2-server"
ALL_TARGETS = (
    "scimd-sqlite",
    "scimd-postgres",
    "bare",
    "bare-postgres",
    "scim2-server",
    "scim2-server-cli",
)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOAD_OPS = 7  # the operations of bench/load.py (ALL_OPS there)


class TargetError(Exception):
    """A target could not be prepared or started; the run goes on with the others."""


@dataclass
class Server:
    """How to start one target and where bench/load.py reaches it."""

    argv: list[str]
    base_url: str
    ready_url: str
    token: str = "unused"
    env: dict[str, str] = field(default_factory=dict)
    # Processes whose command line contains this are part of the target (PostgreSQL backends).
    cmdline_match: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scimd_command() -> list[str]:
    """The scimd CLI of the running interpreter's environment."""
    script = Path(sys.executable).parent / "scimd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "scimd.cli.main"]


def scimd_server(database_url: str, port: int, tmp: Path, cmdline_match: str = "") -> Server:
    """Create a bench API client in the database, then describe ``scimd serve``."""
    scimd = scimd_command()
    create = [
        *scimd,
        "apps",
        "create",
        "--name",
        f"bench-{secrets.token_hex(4)}",
        "--grant",
        "bearer",
        "--scope",
        "API",
        "--scope",
        "USER SYNC",
        "--json",
        "--database-url",
        database_url,
    ]
    try:
        done = subprocess.run(create, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"scimd apps create failed: {exc}") from exc
    (tmp / "apps-create.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise TargetError(f"scimd apps create exited {done.returncode}: {done.stderr[-800:]}")
    try:
        token = str(json.loads(done.stdout)["client_secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetError(
            f"no client_secret in the output of apps create: {done.stdout!r}"
        ) from exc
    root = f"http://127.0.0.1:{port}"
    return Server(
        argv=[
            *scimd,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            database_url,
        ],
        base_url=f"{root}/scim/v2",
        ready_url=f"{root}/healthz",
        token=token,
        cmdline_match=cmdline_match,
    )


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of ``server_url``; yield its URL; drop it."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"scimd_bench_{secrets.token_hex(6)}"
    connect = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username,
        "password": url.password,
        "dbname": url.database or "postgres",
        "autocommit": True,
        "connect_timeout": 10,
    }
    try:
        with psycopg.connect(**connect) as admin:  # type: ignore[arg-type]
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise TargetError(f"cannot create a database on {url.host}:{url.port}: {exc}") from exc
    print(f"created database {name}", flush=True)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with psycopg.connect(**connect) as admin:  # type: ignore[arg-type]
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped database {name}", flush=True)
        except psycopg.Error as exc:
            print(f"could not drop database {name}: {exc}", file=sys.stderr, flush=True)


def target_server(
    name: str, port: int, tmp: Path, args: argparse.Namespace, stack: contextlib.ExitStack
) -> Server:
    """Prepare a target and describe how to start it (``stack`` undoes the preparation)."""
    root = f"http://127.0.0.1:{port}"
    if name == "scimd-sqlite":
        return scimd_server(f"sqlite:///{tmp / 'bench.db'}", port, tmp)
    if name in ("scimd-postgres", "bare-postgres"):
        if not args.postgres_url:
            raise TargetError("skipped: neither --postgres-url nor SCIMD_BENCH_POSTGRES_URL is set")
        url = stack.enter_context(fresh_postgres_database(args.postgres_url))
        # The backends serving the bench database show its name in their command line.
        backends = url.rsplit("/", 1)[-1].split("?")[0]
        if name == "scimd-postgres":
            return scimd_server(url, port, tmp, cmdline_match=backends)
        script = str(BENCH_DIR / "reference_bare_postgres.py")
        return Server(
            argv=[sys.executable, script, "--port", str(port), f"--postgres-url={url}"],
            base_url=f"{root}/scim/v2",
            ready_url=f"{root}/scim/v2/Users?count=1",
            cmdline_match=backends,
        )
    if name == "bare":
        script = str(BENCH_DIR / "reference_bare.py")
        return Server(
            argv=[sys.executable, script, "--port", str(port), "--db", str(tmp / "bare.db")],
            base_url=f"{root}/scim/v2",
            ready_url=f"{root}/scim/v2/Users?count=1",
        )
    if name in ("scim2-server", "scim2-server-cli"):
        if args.users > args.scim2_max_users:
            raise TargetError(
                f"skipped: scim2-server above {args.scim2_max_users:,} users "
                "(--scim2-max-users; its list and group operations take seconds per request)"
            )
        if importlib.util.find_spec("scim2_server") is None:
            raise TargetError(
                "scim2-server is not installed: pip install -e '.[bench]' (or leave the target out)"
            )
        mode = "cli" if name.endswith("-cli") else "uvicorn"
        script = str(BENCH_DIR / "reference_scim2_server.py")
        return Server(
            argv=[sys.executable, script, "--port", str(port), "--server", mode],
            base_url=f"{root}/v2",
            ready_url=f"{root}/v2/ServiceProviderConfig",
        )
    raise TargetError(f"unknown target {name!r}")


def launch(name: str, server: Server, log: Path) -> subprocess.Popen[bytes]:
    """Start ``server``, its output going to ``log``."""
    print(f"starting {name}: {' '.join(server.argv)}", flush=True)
    with log.open("wb") as log_file:
        return subprocess.Popen(
            server.argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **server.env},
        )


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll ``url`` until it answers 200, the process dies, or READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetError(f"server exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TargetError(f"not ready after {READY_TIMEOUT:.0f}s ({last}):\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def load_budget(args: argparse.Namespace, ops: list[str] | None, levels: int) -> float:
    """An upper bound on one load.py run: seeding plus every measurement and its stragglers.

    ``ops`` is the ``--ops`` subset, or None for all of them.
    """
    # groups, requests in flight, waiting for quiet
    per_measurement = 2 * float(args.max_seconds) + float(args.timeout) + 5 + float(args.wait_quiet)
    n_ops = LOAD_OPS if ops is None else len(ops)
    budget = float(args.seed_max_seconds) + n_ops * levels * per_measurement + 60
    if ops is None or "group_add_large" in ops:
        # spare users and the two groups, then a second group per level
        budget += 2 * float(args.group_fill_max_seconds) + levels * per_measurement
    return budget


def git_commit() -> str:
    """The short commit of the checkout the benchmark runs from, and whether src/ differs."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = done.stdout.strip() or "unknown"
    if dirty.stdout.strip():
        commit += " + uncommitted changes in src/"
    return commit


def run_target(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start a target, run bench/load.py against it, stop it; return its JSON results."""
    with contextlib.ExitStack() as stack:
        return run_prepared_target(name, args, tmp, stack)


def run_prepared_target(
    name: str, args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    port = free_port()
    server = target_server(name, port, tmp, args, stack)
    log = tmp / "server.log"
    process = launch(name, server, log)
    try:
        wait_ready(process, server.ready_url, log)
        print(f"{name} ready at {server.base_url}", flush=True)
        out = tmp / "load.json"
        load = [
            sys.executable,
            str(BENCH_DIR / "load.py"),
            "--base-url",
            server.base_url,
            f"--token={server.token}",
            "--label",
            name,
            "--seed-users",
            str(args.users),
            "--seed-max-seconds",
            str(args.seed_max_seconds),
            "--requests",
            str(args.requests),
            "--max-seconds",
            str(args.max_seconds),
            "--timeout",
            str(args.timeout),
            "--concurrency",
            args.concurrency,
            "--client",
            args.client,
            "--large-group-size",
            str(args.large_group_size),
            "--group-fill-max-seconds",
            str(
                min(args.group_fill_max_seconds, args.scim2_group_fill_max_seconds)
                if name.startswith("scim2-server")
                else args.group_fill_max_seconds
            ),
            "--server-pid",
            str(process.pid),
            "--wait-quiet",
            str(args.wait_quiet),
            "--json-out",
            str(out),
        ]
        if server.cmdline_match:
            load.append(f"--server-cmdline-match={server.cmdline_match}")
        if args.ops:
            load += ["--ops", args.ops]
        ops = [op.strip() for op in args.ops.split(",") if op.strip()] if args.ops else None
        n_levels = len(args.concurrency.split(","))
        try:
            subprocess.run(load, check=True, timeout=load_budget(args, ops, n_levels))
        except subprocess.CalledProcessError as exc:
            raise TargetError(f"load.py exited {exc.returncode}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TargetError("load.py ran past its time budget") from exc
        if process.poll() is not None:
            raise TargetError(f"server died during the run:\n{tail(log)}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        stop(process)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def markdown(
    runs: dict[str, dict[str, Any]], problems: dict[str, str], args: argparse.Namespace
) -> str:
    """The combined report: a req/s overview, then every figure per target."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# SCIM load benchmark ({now}, commit {args.commit})",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        f"- seeded users: {args.users}; per measurement: up to {args.requests} requests or "
        f"{args.max_seconds:g} s; concurrency {args.concurrency}; client: {args.client}",
        "- load generator and server share the machine, over loopback HTTP/1.1",
        "",
    ]
    targets = list(runs)
    if targets:
        keys: list[tuple[str, int]] = []
        for run in runs.values():
            for r in run["results"]:
                if (r["op"], r["concurrency"]) not in keys:
                    keys.append((r["op"], r["concurrency"]))
        index = {
            (target, r["op"], r["concurrency"]): r
            for target, run in runs.items()
            for r in run["results"]
        }
        lines += ["## Requests per second", ""]
        lines.append("| op | conc | " + " | ".join(targets) + " |")
        lines.append("|---|---:|" + "---:|" * len(targets))
        for op, conc in keys:
            cells = []
            for target in targets:
                r = index.get((target, op, conc))
                if r is None:
                    cells.append("")
                else:
                    cells.append(fmt(r["rps"], 0) + (" ⚠" if r["errors"] else ""))
            lines.append(f"| {op} | {conc} | " + " | ".join(cells) + " |")
        lines.append("")
        if any(r["errors"] for run in runs.values() for r in run["results"]):
            lines += ["⚠: some requests failed (see the errors column below).", ""]
        lines += ["## All figures", ""]
        lines.append(
            "| target | op | conc | requests | errors | req/s | p50 ms | p99 ms | other CPU "
            "| note |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for target, run in runs.items():
            for r in run["results"]:
                other = r.get("other_cpu", -1.0)
                lines.append(
                    f"| {target} | {r['op']} | {r['concurrency']} | {r['requests']} | "
                    f"{r['errors']} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'])} | "
                    f"{fmt(r['p99_ms'])} | {fmt(other, 2) if other >= 0 else '?'} | {r['note']} |"
                )
        lines += [
            "",
            "other CPU: cores kept busy meanwhile by processes other than the load generator "
            "and the target (for scimd-postgres and bare-postgres, PostgreSQL's background "
            "processes count as other); well above 0 means the measurement shared the machine.",
        ]
        lines.append("")
        seeded = [
            f"{target}: {run.get('seeded_users', '?')}/{run.get('seed_users', '?')}"
            + (f" ({run['elapsed_seconds']:.0f} s in all)" if "elapsed_seconds" in run else "")
            for target, run in runs.items()
        ]
        lines += ["Seeded users per target: " + ", ".join(seeded) + ".", ""]
        samples = [
            f"- {target} {r['op']} c={r['concurrency']}: {sample}"
            for target, run in runs.items()
            for r in run["results"]
            for sample in r.get("error_samples", [])[:1]
        ]
        if samples:
            lines += ["## First error of each failing measurement", "", *samples, ""]
    if problems:
        lines += ["## Targets not measured", ""]
        lines += [f"- {target}: {reason.splitlines()[0]}" for target, reason in problems.items()]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the SCIM load benchmark on every target.")
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help=f"from {', '.join(ALL_TARGETS)}")
    parser.add_argument("--users", type=int, default=10000, help="users seeded per target")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap per measurement")
    parser.add_argument("--seed-max-seconds", type=float, default=600.0, help="cap on seeding")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--concurrency", default="8,32", help="comma-separated levels")
    parser.add_argument("--ops", default="", help="subset of bench/load.py operations")
    parser.add_argument("--client", choices=("fast", "httpx"), default="fast")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SCIMD_BENCH_POSTGRES_URL", ""),
        help="PostgreSQL server of scimd-postgres and bare-postgres (a fresh database is created "
        "per target and run; default $SCIMD_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--large-group-size",
        type=int,
        default=100_000,
        help="members of the large group of group_add_large (capped at --users)",
    )
    parser.add_argument(
        "--group-fill-max-seconds",
        type=float,
        default=600.0,
        help="cap on preparing the groups of group_add_large",
    )
    parser.add_argument(
        "--scim2-group-fill-max-seconds",
        type=float,
        default=60.0,
        help="cap on filling scim2-server's large group (each add takes seconds there)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each measurement, wait up to this many seconds for other processes to "
        "go quiet (bench/load.py --wait-quiet)",
    )
    parser.add_argument(
        "--scim2-max-users",
        type=int,
        default=10_000,
        help="skip scim2-server above this many users",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "latest.md", help="markdown report path"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep databases and logs")
    parser.add_argument(
        "--code-label",
        default="",
        help="what the report names as the code measured, instead of the checkout's commit "
        "(e.g. when PYTHONPATH points scimd at an exported snapshot of one commit)",
    )
    args = parser.parse_args(argv)
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.target_list if t not in ALL_TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(ALL_TARGETS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.commit = args.code_label or git_commit()
    runs: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for name in args.target_list:
        print(f"\n==== {name} ====", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"scimd-bench-{name}-"))
        started = time.monotonic()
        try:
            runs[name] = run_target(name, args, tmp)
            runs[name]["elapsed_seconds"] = round(time.monotonic() - started, 1)
            print(f"{name}: done in {time.monotonic() - started:.0f}s", flush=True)
        except TargetError as exc:
            problems[name] = str(exc)
            print(f"{name}: {exc}", file=sys.stderr, flush=True)
        finally:
            if args.keep_tmp:
                print(f"{name}: files kept in {tmp}", flush=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)

    report = markdown(runs, problems, args)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "commit": args.commit,
                "users": args.users,
                "runs": runs,
                "problems": problems,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}", flush=True)
    failed = [name for name, reason in problems.items() if not reason.startswith("skipped")]
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
