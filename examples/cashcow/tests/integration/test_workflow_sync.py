from datetime import date

import pytest

from cashcow import cashflow, workflows

START = date(2025, 1, 1)


def test_sync_workflow_analyses_every_company(store, populated):
    results = workflows.run_sync(store, populated, START, 12)
    assert [r.company for r in results] == populated


def test_sync_results_match_a_direct_projection(store, populated):
    r = workflows.run_sync(store, populated[:1], START, 12)[0]
    company = store.load(populated[0])
    assert r.ending_cash == cashflow.project(company, START, 12)[-1].cash


def test_more_cash_means_more_ending_cash(store, populated):
    results = workflows.run_sync(store, populated, START, 12)
    endings = [r.ending_cash for r in results]
    assert endings == sorted(endings)


def test_runway_grows_with_cash(store, populated):
    results = workflows.run_sync(store, populated, START, 6)
    runways = [r.runway if r.runway is not None else 10**6 for r in results]
    assert runways == sorted(runways)


def test_zero_months_keeps_cash(store, populated):
    r = workflows.run_sync(store, populated[:1], START, 0)[0]
    assert r.ending_cash == store.load(populated[0]).cash


def test_unknown_company_fails_the_workflow(store, populated):
    from cashcow.storage import StorageError

    with pytest.raises(StorageError):
        workflows.run_sync(store, populated + ["ghost"], START, 3)


@pytest.mark.parametrize("months", [1, 12, 60])
def test_burn_is_never_negative(store, populated, months):
    assert all(r.burn >= 0 for r in workflows.run_sync(store, populated, START, months))
