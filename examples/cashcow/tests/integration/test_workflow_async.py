import asyncio
from datetime import date

import pytest

from cashcow import workflows

START = date(2025, 1, 1)


def test_async_matches_sync(store, populated):
    sync = workflows.run_sync(store, populated, START, 12)
    result = asyncio.run(workflows.run_async(store, populated, START, 12))
    assert result == sync


def test_async_keeps_input_order(store, populated):
    names = list(reversed(populated))
    result = asyncio.run(workflows.run_async(store, names, START, 3))
    assert [r.company for r in result] == names


def test_async_overlaps_io(store, populated):
    import time

    t0 = time.perf_counter()
    asyncio.run(workflows.run_async(store, populated, START, 3, io_latency=0.05))
    assert time.perf_counter() - t0 < 0.05 * len(populated)


def test_async_empty_list(store):
    assert asyncio.run(workflows.run_async(store, [], START, 3)) == []


def test_async_propagates_errors(store, populated):
    from cashcow.storage import StorageError

    with pytest.raises(StorageError):
        asyncio.run(workflows.run_async(store, ["ghost"], START, 3))


@pytest.mark.parametrize("months", [1, 24])
def test_async_months(store, populated, months):
    result = asyncio.run(workflows.run_async(store, populated[:2], START, months))
    assert all(r.months == months for r in result)
