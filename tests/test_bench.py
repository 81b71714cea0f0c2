"""The benchmarks of ``bench/`` and its soak run, at a tiny size, against this checkout.

Their figures are not checked (tests never assert timings): what is checked is that every
operation of every target was measured and answered without an error, so that a change to the
API or the harness that breaks a benchmark is found here rather than when the next figures
for ``docs/performance.md`` are taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import load  # noqa: E402  (bench/load.py, the load generator: its list of operations)

# group_add_large measures adds and removes on a small and on a large group: four rows.
LARGE_ROWS = [f"group_{op}_100_{size}" for size in ("small", "large") for op in ("add", "remove")]
# Every row of a bench/run.py run.
LOAD_ROWS = [op for op in load.ALL_OPS if op != "group_add_large"] + LARGE_ROWS


def _bench(script: str, *args: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _postgres_server() -> str:
    url = os.environ.get("SCIMD_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("SCIMD_TEST_POSTGRES_URL is not set; .ci/run starts PostgreSQL for this")
        pytest.skip("set SCIMD_TEST_POSTGRES_URL to run the PostgreSQL benchmarks")
    return url


def _check_load_report(report: dict[str, Any], targets: list[str], users: int) -> None:
    assert sorted(report["runs"]) == sorted(targets)
    assert not report["problems"], report["problems"]
    for target in targets:
        run = report["runs"][target]
        assert run["seeded_users"] == users, target
        measured = {(r["op"], r["concurrency"]): r for r in run["results"]}
        for op in LOAD_ROWS:
            for level in (2, 4):
                row = measured.get((op, level))
                assert row is not None, f"{target}: {op} at c={level} was not measured"
                assert row["errors"] == 0, (target, op, level, row["error_samples"])
                assert row["requests"] > 0 and row["rps"] > 0, (target, op, level)


def _load_run(tmp_path: Path, targets: list[str], *extra: str) -> dict[str, Any]:
    out = tmp_path / "report.md"
    _bench(
        "run.py",
        "--targets",
        ",".join(targets),
        "--users",
        "400",
        "--requests",
        "40",
        "--concurrency",
        "2,4",
        "--large-group-size",
        "200",
        "--wait-quiet",
        "0",
        "--out",
        str(out),
        *extra,
    )
    report: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    _check_load_report(report, targets, 400)
    written = out.read_text()
    assert all(f"| {target} |" in written for target in targets), written[:2000]
    return report


def test_load_benchmark_on_sqlite_and_its_summary(tmp_path: Path) -> None:
    _load_run(tmp_path, ["scimd-sqlite", "bare"])
    # The tables of docs/performance.md are made from such reports.
    tables = _bench("summarize.py", str(tmp_path / "report.json"))
    for op in LOAD_ROWS:
        assert op in tables
    assert "req/s as a fraction of bare" in tables


def test_load_benchmark_on_postgresql(tmp_path: Path) -> None:
    server = _postgres_server()
    _load_run(tmp_path, ["scimd-postgres", "bare-postgres"], "--postgres-url", server)


def test_paired_runs(tmp_path: Path) -> None:
    out = tmp_path / "paired.md"
    _bench(
        "paired.py",
        "--users",
        "300",
        "--subject",
        "scimd-sqlite",
        "--reference",
        "bare",
        "--ops",
        "post_user,get_user,patch_user,group_add_large",
        "--rounds",
        "2",
        "--requests",
        "30",
        "--group-requests",
        "20",
        "--concurrency",
        "2",
        "--wait-quiet",
        "0",
        "--out",
        str(out),
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["subject"], report["reference"], report["rounds"]) == ("scimd-sqlite", "bare", 2)
    rows = {r["op"]: r for r in report["rows"]}
    assert sorted(rows) == sorted(["post_user", "get_user", "patch_user", *LARGE_ROWS])
    for op, row in rows.items():
        assert row["errors"] == [0, 0], op
        assert len(row["ratios"]) == 2 and all(r > 0 for r in row["ratios"]), op


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_in_process_cpu(concurrency: str) -> None:
    printed = _bench("inprocess.py", "--users", "300", "--concurrency", concurrency)
    cpu, wall = (json.loads(line) for line in printed.splitlines())
    assert cpu["concurrency"] == int(concurrency)
    ops = [
        "post_user",
        "get_user",
        "filter_username",
        "patch_user",
        "post_group",
        "group_add_100",
        "group_readd_100",
        "group_remove_100",
    ]
    assert sorted(cpu["us_cpu_per_request"]) == sorted(ops)
    assert sorted(wall["us_wall_per_request"]) == sorted(ops)
    assert all(v > 0 for v in cpu["us_cpu_per_request"].values())


def test_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    printed = _bench(
        "soak.py",
        "--rounds",
        "2",
        "--requests",
        "100",
        "--seed-users",
        "300",
        "--round-users",
        "50",
        "--concurrency",
        "4",
        "--json-out",
        str(out),
    )
    rounds = json.loads(out.read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["memory_kib"]["RssAnon"] > 0 and r["memory_kib"]["VmRSS"] > 0
        assert sorted(x["op"] for x in r["results"]) == sorted(
            ["filter_username", "get_user", "patch_user", "list_page", "group_add_members"]
        )
        assert all(x["errors"] == 0 and x["requests"] > 0 for x in r["results"]), r["results"]
    assert "round   2  RssAnon" in printed
