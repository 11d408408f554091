from datetime import date

import pytest

from cashcow import cashflow, equity
from cashcow.models import Company, EquityGrant, Employee, Expense, RevenueStream


@pytest.mark.parametrize(
    "start,end,months",
    [
        (date(2024, 1, 1), date(2024, 1, 1), 0),
        (date(2024, 1, 15), date(2024, 2, 14), 0),
        (date(2024, 1, 15), date(2024, 2, 15), 1),
        (date(2024, 1, 1), date(2025, 1, 1), 12),
        (date(2025, 1, 1), date(2024, 1, 1), 0),
    ],
)
def test_months_between(start, end, months):
    assert equity.months_between(start, end) == months


@pytest.mark.parametrize(
    "on,vested",
    [
        (date(2024, 6, 1), 0),
        (date(2024, 12, 31), 0),
        (date(2025, 1, 1), 12_000),
        (date(2025, 7, 1), 18_000),
        (date(2028, 1, 1), 48_000),
        (date(2030, 1, 1), 48_000),
    ],
)
def test_vested_shares_follow_cliff_then_monthly(grant, on, vested):
    assert equity.vested_shares(grant, on) == vested


def test_vesting_schedule_has_a_month_per_vesting_month(grant):
    s = equity.vesting_schedule(grant)
    assert len(s) == 48
    assert s[10] == (11, 0)
    assert s[11] == (12, 12_000)
    assert s[-1] == (48, 48_000)


def test_vesting_schedule_never_decreases(grant):
    values = [v for _, v in equity.vesting_schedule(grant)]
    assert values == sorted(values)


def test_monthly_vesting_amount_is_rounded_to_cents():
    g = EquityGrant(shares=100_000, strike_price=0.1, grant_date=date(2024, 1, 1))
    assert equity.monthly_vesting_amount(g, 1.0) == 2083.33


@pytest.mark.parametrize("shares,cost", [(0, 0.0), (1000, 1000.0), (48_000, 48_000.0)])
def test_exercise_cost(grant, shares, cost):
    assert equity.exercise_cost(grant, shares) == cost


@pytest.mark.parametrize("shares", [-1, 48_001])
def test_exercise_cost_rejects_impossible_counts(grant, shares):
    with pytest.raises(ValueError):
        equity.exercise_cost(grant, shares)


@pytest.mark.parametrize("price,value", [(0.5, 0.0), (1.0, 0.0), (3.0, 24_000.0)])
def test_intrinsic_value_of_vested_shares(grant, price, value):
    assert equity.intrinsic_value(grant, date(2025, 1, 1), price) == value


@pytest.mark.parametrize("existing,new,expected", [(900, 100, 0.1), (1000, 0, 0.0), (1, 1, 0.5)])
def test_dilution(existing, new, expected):
    assert equity.dilution(existing, new) == pytest.approx(expected)


@pytest.mark.parametrize("existing,new", [(0, 1), (100, -1)])
def test_dilution_rejects_nonsense(existing, new):
    with pytest.raises(ValueError):
        equity.dilution(existing, new)


@pytest.mark.parametrize("d,n,expected", [(date(2024, 1, 9), 0, date(2024, 1, 1)), (date(2024, 11, 1), 3, date(2025, 2, 1)), (date(2024, 1, 1), 24, date(2026, 1, 1))])
def test_add_months(d, n, expected):
    assert cashflow.add_months(d, n) == expected


def test_payroll_counts_only_active_people(company):
    assert cashflow.payroll(company, date(2024, 3, 1)) == 18_000.0
    assert cashflow.payroll(company, date(2025, 3, 1)) == 18_000.0 + 12_000.0 + 8_250.0


def test_revenue_starts_with_its_stream(company):
    assert cashflow.revenue(company, date(2023, 12, 1)) == 0.0
    assert cashflow.revenue(company, date(2024, 1, 1)) == 20_000.0
    assert cashflow.revenue(company, date(2024, 2, 1)) == 21_000.0


def test_one_time_expenses_only_in_the_first_month(company):
    flows = cashflow.project(company, date(2025, 1, 1), 3)
    assert [f.expenses for f in flows] == [17_000.0, 5_000.0, 5_000.0]


def test_projection_accumulates_cash(company):
    flows = cashflow.project(company, date(2025, 1, 1), 6)
    cash = company.cash
    for f in flows:
        assert f.net == round(f.revenue - f.payroll - f.expenses, 2)
        cash = round(cash + f.net, 2)
        assert f.cash == cash


def test_projection_rejects_negative_months(company):
    with pytest.raises(ValueError):
        cashflow.project(company, date(2025, 1, 1), -1)


def test_burn_rate(company):
    flows = cashflow.project(company, date(2025, 1, 1), 1)
    assert cashflow.burn_rate(flows) == max(-flows[0].net, 0)
    assert cashflow.burn_rate([]) == 0.0


def test_runway_of_a_burning_company():
    c = Company("burn", cash=100_000.0)
    c.hire(Employee("a", "x", 120_000, date(2020, 1, 1), benefits_rate=0.0))
    assert cashflow.runway_months(c, date(2025, 1, 1)) == 10


def test_runway_of_a_profitable_company_is_unbounded():
    c = Company("rich", cash=1.0)
    c.revenue.append(RevenueStream("r", 10_000.0, date(2020, 1, 1)))
    assert cashflow.runway_months(c, date(2025, 1, 1)) is None


def test_break_even_month(company):
    flows = cashflow.project(company, date(2025, 1, 1), 36)
    month = cashflow.break_even_month(flows)
    assert month is not None
    first = next(f for f in flows if f.month == month)
    assert first.net >= 0
    assert all(f.net < 0 for f in flows if f.month < month)


def test_no_break_even_when_always_losing():
    c = Company("loss", cash=0.0)
    c.expenses.append(Expense("rent", 100.0, "facilities"))
    assert cashflow.break_even_month(cashflow.project(c, date(2025, 1, 1), 12)) is None
