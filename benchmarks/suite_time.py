"""How long `make test` takes, and where the time goes: runs pytest, writes a results file.

    python benchmarks/suite_time.py                      # the whole suite, as `make test` runs it
    python benchmarks/suite_time.py -- tests/test_data.py  # a selection (pytest's own arguments after --)

The record holds the wall time of the pytest process, pytest's exit status and counts, the seconds per test
module (setup, call and teardown summed, from pytest's JUnit XML) and the slowest tests, beside the device and
commit, and pytest.ini's options (`-n auto`: one pytest-xdist worker per physical core, so the per-module
seconds add up to more than the wall time). The kit's target is about 10 minutes on a 2-core CPU (`TARGET_S`); the
record says whether it was met.
Run it on an otherwise idle machine: other work on the same cores slows every test.
"""
from __future__ import annotations

import argparse
import configparser
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

from common import RESULTS_DIR, ROOT, provenance, results_path, write_results

TARGET_S = 600          # `make test` within about 10 minutes on a 2-core CPU machine
SLOWEST = 20            # how many single tests the record lists


def test_times(junit_xml: Path) -> list[dict]:
    """[{"module", "test", "seconds"}, ...] from pytest's JUnit XML (one row per test; its time includes setup
    and teardown). The module is the test file ("tests/test_eval.py") or the notebook nbval ran."""
    rows = []
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        module = case.get("file") or case.get("classname", "")
        if not module.endswith((".py", ".ipynb")):                   # classname "tests.test_eval" -> file path
            module = module.replace(".", "/") + ".py"
        rows.append({"module": module, "test": case.get("name", ""), "seconds": float(case.get("time") or 0)})
    return rows


def ini_addopts() -> str:
    """pytest.ini's addopts: how many workers ran the suite (-n) and the notebook's options."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    return ini.get("pytest", "addopts", fallback="")


def summarise(rows: list[dict], wall_s: float, exit_status: int, pytest_args: list[str]) -> dict:
    """The results record (without provenance): totals, per module and the slowest tests, seconds rounded."""
    per_module = defaultdict(float)
    for row in rows:
        per_module[row["module"]] += row["seconds"]
    slowest = sorted(rows, key=lambda r: r["seconds"], reverse=True)[:SLOWEST]
    return {
        "what": "pytest's wall time and the time per test module, from a run of the suite",
        "pytest_args": pytest_args,
        "pytest_ini_addopts": ini_addopts(),
        "pytest_exit_status": exit_status,
        "tests": len(rows),
        "wall_s": round(wall_s, 1),
        "target_s": TARGET_S,
        # Only a whole suite measures the target (None: not measured); a failing suite does not meet it.
        "target_met": None if pytest_args else exit_status == 0 and wall_s <= TARGET_S,
        "per_module_s": {m: round(s, 1) for m, s in sorted(per_module.items(), key=lambda kv: -kv[1])},
        "slowest_tests_s": [{**r, "seconds": round(r["seconds"], 1)} for r in slowest],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON")
    parser.add_argument("pytest_args", nargs="*", help="pytest's arguments after --; none: the whole suite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                   *args.pytest_args]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT)
        wall_s = time.perf_counter() - start
        if not junit.is_file():
            print(f"pytest wrote no results ({junit}; exit status {done.returncode}): nothing recorded",
                  file=sys.stderr)
            return done.returncode or 1
        rows = test_times(junit)
    record = {**provenance("cpu"), **summarise(rows, wall_s, done.returncode, args.pytest_args)}
    tag = "selection" if args.pytest_args else ""
    path = write_results(results_path(args.out, "suite-time", "cpu", tag), record)
    met = {True: "met", False: "not met", None: "not measured by a selection"}[record["target_met"]]
    print(f"{record['tests']} tests in {record['wall_s']:.0f} s (target {TARGET_S} s: {met}) -> {path}")
    for module, seconds in list(record["per_module_s"].items())[:8]:
        print(f"  {seconds:7.1f} s  {module}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
