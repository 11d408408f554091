from datetime import date

import pytest

from cashcow import cashflow
from cashcow.models import Employee
from cashcow.scenarios import Scenario, best, compare, standard_scenarios

START = date(2025, 1, 1)


def test_standard_scenarios_are_base_optimistic_pessimistic():
    assert [s.name for s in standard_scenarios()] == ["base", "optimistic", "pessimistic"]


def test_base_scenario_changes_nothing_but_the_name(company):
    c = Scenario("base").apply(company)
    assert c.name == "acme:base"
    assert cashflow.project(c, START, 12) == cashflow.project(company, START, 12)


def test_apply_does_not_touch_the_original(company):
    Scenario("x", revenue_multiplier=2.0).apply(company)
    assert company.revenue[0].monthly_amount == 20_000.0


@pytest.mark.parametrize("mult,expected", [(0.5, 10_000.0), (1.25, 25_000.0), (0.0, 0.0)])
def test_revenue_multiplier(company, mult, expected):
    assert Scenario("x", revenue_multiplier=mult).apply(company).revenue[0].monthly_amount == expected


def test_growth_delta_adds(company):
    assert Scenario("x", growth_delta=0.01).apply(company).revenue[0].monthly_growth == pytest.approx(0.06)


def test_expense_multiplier(company):
    c = Scenario("x", expense_multiplier=2.0).apply(company)
    assert [x.monthly_amount for x in c.expenses] == [10_000.0, 24_000.0]


def test_hires_are_added(company):
    c = Scenario("hire", hires=[Employee("dee", "eng", 100_000, date(2025, 2, 1))]).apply(company)
    assert c.headcount(date(2025, 3, 1)) == 4


def test_negative_multipliers_are_refused():
    with pytest.raises(ValueError):
        Scenario("x", revenue_multiplier=-1)


def test_optimistic_beats_base_beats_pessimistic(company):
    results = {c.scenario: c for c in compare(company, standard_scenarios(), START, 24)}
    assert results["optimistic"].ending_cash > results["base"].ending_cash > results["pessimistic"].ending_cash
    assert best(list(results.values())).scenario == "optimistic"


def test_compare_refuses_duplicate_names(company):
    with pytest.raises(ValueError):
        compare(company, [Scenario("a"), Scenario("a")], START, 3)


def test_best_of_nothing():
    with pytest.raises(ValueError):
        best([])
