"""C2: how much the parallel workflow gains over the sequential one when
each analysis waits on a store round trip. Reports `speedup`."""

from datetime import date

from cashcow import perf, workflows

START = date(2025, 1, 1)
LATENCY = 0.05


def test_parallel_speedup_is_measured_and_reported(store, populated):
    names = populated * 2
    serial, a = perf.timed(workflows.run_sync, store, names, START, 6, io_latency=LATENCY)
    parallel, b = perf.timed(workflows.run_parallel, store, names, START, 6, io_latency=LATENCY, workers=8)
    assert a == b
    speedup = serial / parallel
    perf.record_metric("speedup", round(speedup, 3))
    assert speedup > 1.0


def test_serial_time_is_bounded_below_by_latency(store, populated):
    seconds, _ = perf.timed(workflows.run_sync, store, populated, START, 1, io_latency=LATENCY)
    assert seconds >= LATENCY * len(populated)


def test_one_worker_is_no_faster_than_serial(store, populated):
    serial, _ = perf.timed(workflows.run_sync, store, populated[:4], START, 1, io_latency=LATENCY)
    one, _ = perf.timed(workflows.run_parallel, store, populated[:4], START, 1, io_latency=LATENCY, workers=1)
    assert one >= serial * 0.8
