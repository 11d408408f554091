from datetime import date

import pytest

from cashcow import cashflow, perf
from cashcow.storage import Store

START = date(2025, 1, 1)


@pytest.mark.parametrize("employees", [10, 100, 1000])
def test_synthetic_company_has_the_requested_size(employees):
    c = perf.synthetic_company(employees)
    assert len(c.employees) == employees
    assert c.headcount(START) == employees


def test_synthetic_company_is_deterministic():
    a, b = perf.synthetic_company(50, seed=3), perf.synthetic_company(50, seed=3)
    assert [e.salary for e in a.employees] == [e.salary for e in b.employees]


def test_projection_of_a_large_company_is_fast_enough():
    c = perf.synthetic_company(1000)
    seconds, flows = perf.timed(cashflow.project, c, START, 24)
    assert len(flows) == 24
    assert seconds < 30


def test_store_handles_a_large_company(tmp_path):
    store = Store(tmp_path)
    c = perf.synthetic_company(2000)
    store.save(c)
    assert len(store.load(c.name).employees) == 2000
