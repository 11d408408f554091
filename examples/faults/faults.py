#!/usr/bin/env python3
"""One real failure per kind, for testfleet's recovery to meet.

    python3 faults.py KIND

Each fault happens for real (a missing module, a refused connection, a
write to /dev/full, a segfault, ...). Faults that recovery can fix only
happen the first time(s): the state of which time this is lives in
$FAULTS_STATE_DIR (default: a directory per suite run), shared by every
agent on the host.
"""

import os
import signal
import socket
import sys
import time

STATE = os.environ.get("FAULTS_STATE_DIR") or os.path.join(
    "/tmp", "testfleet-faults-" + os.environ.get("TESTFLEET_SUITE_ID", "local")
)
WORKDIR = os.environ.get("TESTFLEET_WORKDIR", ".")


def times_seen(name: str) -> int:
    """How many times this fault ran before (counted across agents)."""
    os.makedirs(STATE, exist_ok=True)
    path = os.path.join(STATE, name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    return n


def import_error():
    # The dependency the setup step installed goes missing once; level-1
    # recovery (reinstall) brings it back.
    deps = os.path.join(WORKDIR, "deps")
    if times_seen("import") == 0:
        os.remove(os.path.join(deps, "fleetdep.py"))
    sys.path.insert(0, deps)
    import fleetdep  # noqa: F401

    print("imported fleetdep", fleetdep.VALUE)


def permission_error():
    # A data file in the workdir loses its permissions once; level-1
    # recovery restores them. Checked explicitly, as root ignores modes.
    path = os.path.join(WORKDIR, "data", "ledger.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if times_seen("permission") == 0:
        open(path, "w").close()
        os.chmod(path, 0)
    if not os.stat(path).st_mode & 0o200:
        raise PermissionError(13, "Permission denied", path)
    with open(path, "a") as f:
        f.write("ok\n")
    print("wrote", path)


def memory_error():
    # Needs 700 MB with the full data set, which is more than the task
    # reserves; level-1 recovery reruns it with TESTFLEET_REDUCED=1.
    size = (8 if os.environ.get("TESTFLEET_REDUCED") == "1" else 700) << 20
    data = b"x" * size
    time.sleep(3)
    print("processed", len(data), "bytes")


def timeout_error():
    # Takes 5 s with a 4 s timeout; level 1 extends it once (to 6 s). A
    # second either side, so a loaded host (setup installing pytest beside
    # it) neither finishes it in time nor times out the extended run.
    time.sleep(5)
    print("done in time, the second time")


def network_error():
    # The service it needs is down for the first two tries; level-1
    # recovery retries with backoff.
    if times_seen("network") < 2:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        socket.create_connection(("127.0.0.1", port), timeout=2)
    print("connected")


def system_error():
    # Crashes the first time; level 2 moves it to another agent.
    if times_seen("system") == 0:
        os.kill(os.getpid(), signal.SIGSEGV)
    print("ran clean")


def resource_exhaustion():
    # The disk is full the first time (a real ENOSPC from /dev/full);
    # level 2 reallocates resources and runs it again.
    if times_seen("exhaustion") == 0:
        with open("/dev/full", "w") as f:
            f.write("x" * 4096)
            f.flush()
    print("wrote the results")


def report():
    print("report built on the calculation's results")


FAULTS = {
    "import": import_error,
    "permission": permission_error,
    "memory": memory_error,
    "timeout": timeout_error,
    "network": network_error,
    "system": system_error,
    "exhaustion": resource_exhaustion,
    "calc_report": report,
}

if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
