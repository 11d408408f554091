"""testfleet's pytest plugin, loaded by the agent with `-p testfleet_runner`.

Collecting (TESTFLEET_PYTEST_COLLECT=FILE): writes the ids pytest selected,
after -k/-m and every plugin's deselection, with the rootdir they are
relative to and the collection errors (their number, and each one's file and
last line), as one JSON object. With TESTFLEET_PYTEST_CONTROL set too, the
collecting process then stays on as a resident runner (below).

Running a batch (TESTFLEET_PYTEST_TESTS=FILE, one id a line): keeps only
those items, in pytest's order, and appends to TESTFLEET_PYTEST_RESULTS one
JSON line when each test starts and one when it ends (outcome: passed,
failed, skipped, xfailed, xpassed or error; seconds over setup, call and
teardown; message), flushed at once: the agent reads them
as they come, and a test that started and never ended is the one that took
its runner down.

Resident (TESTFLEET_PYTEST_CONTROL=FD, a socket the agent holds the other
end of): collects once, says {"ready": n} and then runs batch after batch,
each asked for as {"run": {"tests": FILE, "results": FILE, "batch": ID}}
and answered with {"done": ID} once its results lines are written, until
{"quit": true} or the socket closes. pytest-xdist's worker runs an item
only once it knows the next one, so that fixtures end exactly when the
next item no longer needs them; a batch cannot wait for the next (the
agent asks for it only when this one is done), so a batch's last item runs
with a "next item" that needs only the session: its module and class
fixtures end in its own teardown, reported with it, and session fixtures
live on to the next batch and end when the runner quits.
"""

import json
import os
import socket
import sys
import traceback

import pytest

_COLLECT = os.environ.get("TESTFLEET_PYTEST_COLLECT")
_TESTS = os.environ.get("TESTFLEET_PYTEST_TESTS")
_RESULTS = os.environ.get("TESTFLEET_PYTEST_RESULTS")
_CONTROL = os.environ.get("TESTFLEET_PYTEST_CONTROL")

_out = None
_state = {}
_collect_errors = []


def _write(obj):
    global _out
    if _out is None:
        _out = open(_RESULTS, "a", encoding="utf-8")
    _out.write(json.dumps(obj) + "\n")
    _out.flush()


class _SessionOnly:
    """The "next item" of a batch's last test: one that needs the session
    and nothing under it (see the module's docstring)."""

    def __init__(self, session):
        self._chain = [session]

    def listchain(self):
        return self._chain


def _run_batch(session, items, order, cmd):
    global _RESULTS, _out
    with open(cmd["tests"], encoding="utf-8") as f:
        wanted = [line.rstrip("\n") for line in f if line.strip()]
    _RESULTS, _out = cmd["results"], None
    for nodeid in wanted:
        if nodeid not in items:
            _write(
                {
                    "id": nodeid,
                    "outcome": "error",
                    "duration": 0.0,
                    "message": "not collected by this runner",
                }
            )
    run = sorted({n for n in wanted if n in items}, key=order.get)
    last = _SessionOnly(session)
    for i, nodeid in enumerate(run):
        nextitem = items[run[i + 1]] if i + 1 < len(run) else last
        session.config.hook.pytest_runtest_protocol(
            item=items[nodeid], nextitem=nextitem
        )
    if _out is not None:
        _out.close()
    _RESULTS, _out = None, None


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    if not _CONTROL or session.config.option.collectonly:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=int(_CONTROL))
    rfile, wfile = sock.makefile("rb"), sock.makefile("wb")

    def send(obj):
        wfile.write((json.dumps(obj) + "\n").encode())
        wfile.flush()

    items = {it.nodeid: it for it in session.items}
    order = {it.nodeid: i for i, it in enumerate(session.items)}
    send({"ready": len(items), "errors": session.testsfailed, "pid": os.getpid()})
    for line in rfile:
        cmd = json.loads(line)
        if "run" in cmd:
            _run_batch(session, items, order, cmd["run"])
            send({"done": cmd["run"].get("batch", "")})
        elif cmd.get("quit"):
            break
    # The session's fixtures end here, as they would after the last test.
    try:
        session._setupstate.teardown_exact(None)
    except BaseException:
        sys.stderr.write("testfleet: tearing down the session failed:\n")
        sys.stderr.write(traceback.format_exc())
    return True


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


def pytest_collectreport(report):
    if _COLLECT and report.failed:
        lines = (report.longreprtext or "").strip().splitlines()
        why = lines[-1].strip() if lines else "failed"
        if why.startswith("E "):
            why = why[2:].strip()
        _collect_errors.append(f"{report.nodeid or '.'}: {why}"[:500])


def pytest_collection_finish(session):
    if not _COLLECT:
        return
    root = os.path.relpath(str(session.config.rootpath), os.getcwd())
    data = {
        "root": root,
        "errors": session.testsfailed,
        "error_details": _collect_errors,
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
        return
    if s["outcome"] != "passed":
        # An earlier phase already skipped it; a passing teardown keeps that.
        return
    if report.skipped:
        # An xfail that failed is a skip report with `wasxfail` set; pytest
        # counts it apart from skips, and so do we.
        if hasattr(report, "wasxfail"):
            s["outcome"], s["message"] = "xfailed", report.wasxfail or ""
        else:
            s["outcome"], s["message"] = "skipped", _skip_reason(report)
    elif report.when == "call" and hasattr(report, "wasxfail"):
        # A non-strict xfail that passed (a strict one is reported failed).
        s["outcome"] = "xpassed"
        s["message"] = report.wasxfail or ""


def _skip_reason(report):
    # A skip's longrepr is (file, line, "Skipped: why").
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return ""


def pytest_runtest_logfinish(nodeid, location):
    if not _RESULTS:
        return
    s = _state.pop(nodeid, {"outcome": "passed", "duration": 0.0, "message": ""})
    _write({"id": nodeid, **s})
