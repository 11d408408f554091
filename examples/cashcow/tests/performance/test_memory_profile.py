"""C3: streaming projections against materialised ones. Reports
`memory_efficiency`: the share of peak memory that streaming saves."""

from datetime import date

import pytest

from cashcow import perf

START = date(2025, 1, 1)
MONTHS = 20_000


@pytest.fixture(scope="module")
def company():
    return perf.synthetic_company(5)


def test_streaming_and_list_agree(company):
    assert perf.streaming_total(company, START, 240) == pytest.approx(perf.list_total(company, START, 240))


def test_memory_efficiency_is_measured_and_reported(company):
    streaming = perf.peak_memory(perf.streaming_total, company, START, MONTHS)
    materialised = perf.peak_memory(perf.list_total, company, START, MONTHS)
    efficiency = 1 - streaming / materialised
    perf.record_metric("memory_efficiency", round(efficiency, 4))
    assert streaming < materialised


def test_peak_memory_grows_with_the_list(company):
    small = perf.peak_memory(perf.list_total, company, START, 1_000)
    large = perf.peak_memory(perf.list_total, company, START, 10_000)
    assert large > small
