from datetime import date

import pytest

from cashcow import workflows

START = date(2025, 1, 1)


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_parallel_matches_sync(store, populated, workers):
    assert workflows.run_parallel(store, populated, START, 12, workers=workers) == workflows.run_sync(store, populated, START, 12)


def test_parallel_keeps_input_order(store, populated):
    names = populated[::-1]
    assert [r.company for r in workflows.run_parallel(store, names, START, 3)] == names


def test_parallel_needs_a_worker(store, populated):
    with pytest.raises(ValueError):
        workflows.run_parallel(store, populated, START, 3, workers=0)


def test_parallel_overlaps_io(store, populated):
    import time

    t0 = time.perf_counter()
    workflows.run_parallel(store, populated, START, 3, io_latency=0.05, workers=8)
    assert time.perf_counter() - t0 < 0.05 * len(populated)


def test_parallel_propagates_errors(store, populated):
    from cashcow.storage import StorageError

    with pytest.raises(StorageError):
        workflows.run_parallel(store, ["ghost"], START, 3)


def test_parallel_shares_the_cache(store, populated):
    workflows.run_parallel(store, populated, START, 3, workers=1)
    workflows.run_parallel(store, populated, START, 3, workers=4)
    assert store.reads == len(populated)
