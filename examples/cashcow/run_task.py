#!/usr/bin/env python3
"""Runs one testfleet task's share of the CashCow tests.

    python run_task.py TASK_ID [--artifacts DIR] [extra pytest args]

Each task names its tests and the modules its coverage is measured on; the
JUnit XML and Cobertura coverage land in the artifacts directory, where
testfleet's template says to look for them.
"""

import argparse
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

TASKS = {
    "A1": (["tests/unit/test_models.py"], ["cashcow.models"]),
    "A2": (["tests/unit/test_calculators.py"], ["cashcow.equity", "cashcow.cashflow"]),
    "A3": (["tests/unit/test_storage.py"], ["cashcow.storage"]),
    "B1a": (["tests/integration/test_workflow_sync.py"], ["cashcow.workflows"]),
    "B1b": (["tests/integration/test_workflow_async.py"], ["cashcow.workflows"]),
    "B1c": (["tests/integration/test_workflow_parallel.py"], ["cashcow.workflows"]),
    "B2": (["tests/integration/test_scenarios.py"], ["cashcow.scenarios"]),
    "B3": (["tests/integration/test_reports.py"], ["cashcow.reports"]),
    "C1": (["tests/performance/test_scale.py"], ["cashcow.perf"]),
    "C2": (["tests/performance/test_parallel_bench.py"], ["cashcow.workflows"]),
    "C3": (["tests/performance/test_memory_profile.py"], ["cashcow.perf"]),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("task")
    parser.add_argument("--artifacts", default=os.environ.get("TESTFLEET_ARTIFACTS", "."))
    args, extra = parser.parse_known_args()
    if args.task not in TASKS:
        print(f"unknown task {args.task!r}; known: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    tests, modules = TASKS[args.task]
    os.chdir(HERE)
    sys.path.insert(0, os.path.join(HERE, "src"))
    os.makedirs(args.artifacts, exist_ok=True)
    # Tasks share this directory on an agent: keep each one's coverage data apart.
    os.environ["COVERAGE_FILE"] = os.path.join(os.path.abspath(args.artifacts), ".coverage")
    argv = [*tests, "-v", "-p", "no:cacheprovider", f"--junitxml={os.path.join(args.artifacts, 'junit.xml')}"]
    argv += [f"--cov={m}" for m in modules]
    argv += [f"--cov-report=xml:{os.path.join(args.artifacts, 'coverage.xml')}", "--cov-report=term"]
    return pytest.main(argv + extra)


if __name__ == "__main__":
    sys.exit(main())
