"""testfleet's pytest plugin, loaded by the agent with `-p testfleet_runner`.

Collecting (TESTFLEET_PYTEST_COLLECT=FILE): writes the ids pytest selected,
after -k/-m and every plugin's deselection, with the rootdir they are
relative to and the number of collection errors, as one JSON object.

Running a batch (TESTFLEET_PYTEST_TESTS=FILE, one id a line): keeps only
those items, in pytest's order, and appends to TESTFLEET_PYTEST_RESULTS one
JSON line when each test starts and one when it ends (outcome, seconds over
setup, call and teardown, message), flushed at once: the agent reads them
as they come, and a test that started and never ended is the one that took
its runner down.
"""

import json
import os

_COLLECT = os.environ.get("TESTFLEET_PYTEST_COLLECT")
_TESTS = os.environ.get("TESTFLEET_PYTEST_TESTS")
_RESULTS = os.environ.get("TESTFLEET_PYTEST_RESULTS")

_out = None
_state = {}


def _write(obj):
    global _out
    if _out is None:
        _out = open(_RESULTS, "a", encoding="utf-8")
    _out.write(json.dumps(obj) + "\n")
    _out.flush()


def pytest_collection_modifyitems(session, config, items):
    if not _TESTS:
        return
    with open(_TESTS, encoding="utf-8") as f:
        wanted = {line.rstrip("\n") for line in f if line.strip()}
    keep = [it for it in items if it.nodeid in wanted]
    drop = [it for it in items if it.nodeid not in wanted]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collection_finish(session):
    if not _COLLECT:
        return
    root = os.path.relpath(str(session.config.rootpath), os.getcwd())
    data = {
        "root": root,
        "errors": session.testsfailed,
        "tests": [it.nodeid for it in session.items],
    }
    tmp = _COLLECT + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, _COLLECT)


def pytest_runtest_logstart(nodeid, location):
    if _RESULTS:
        _write({"start": nodeid})


def pytest_runtest_logreport(report):
    if not _RESULTS:
        return
    s = _state.setdefault(
        report.nodeid, {"outcome": "passed", "duration": 0.0, "message": ""}
    )
    s["duration"] += report.duration
    if report.failed:
        s["outcome"] = "failed" if report.when == "call" else "error"
        s["message"] = (report.longreprtext or "")[-2000:]
    elif report.skipped and s["outcome"] == "passed":
        s["outcome"] = "skipped"


def pytest_runtest_logfinish(nodeid, location):
    if not _RESULTS:
        return
    s = _state.pop(nodeid, {"outcome": "passed", "duration": 0.0, "message": ""})
    _write({"id": nodeid, **s})
