"""Fails the first time it runs in a suite, passes after: a flaky test."""

import os

STATE = os.environ.get("FAULTS_STATE_DIR") or os.path.join("/tmp", "testfleet-faults-" + os.environ.get("TESTFLEET_SUITE_ID", "local"))


def test_cache_is_warm():
    os.makedirs(STATE, exist_ok=True)
    marker = os.path.join(STATE, "flaky")
    first = not os.path.exists(marker)
    open(marker, "w").close()
    assert not first, "cache was cold"
