from datetime import date

import pytest

from cashcow.models import Company, EquityGrant, Employee, Expense, RevenueStream, ValidationError


def test_employee_monthly_cost_includes_benefits():
    e = Employee("ada", "cto", 120_000, date(2024, 1, 1))
    assert e.monthly_cost == 12_000.0


def test_employee_monthly_cost_custom_benefits():
    e = Employee("ada", "cto", 120_000, date(2024, 1, 1), benefits_rate=0.1)
    assert e.monthly_cost == 11_000.0


@pytest.mark.parametrize(
    "on,active",
    [(date(2023, 12, 31), False), (date(2024, 1, 1), True), (date(2024, 6, 30), True), (date(2024, 7, 1), False)],
)
def test_employee_active_window(on, active):
    e = Employee("ada", "cto", 1, date(2024, 1, 1), end_date=date(2024, 6, 30))
    assert e.is_active(on) is active


def test_employee_without_end_date_stays_active():
    assert Employee("ada", "cto", 1, date(2024, 1, 1)).is_active(date(2040, 1, 1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name=" "), "needs a name"),
        (dict(salary=-1), "negative"),
        (dict(benefits_rate=1.5), "fraction"),
        (dict(end_date=date(2023, 1, 1)), "before starting"),
    ],
)
def test_employee_validation(kwargs, message):
    args = dict(name="ada", role="cto", salary=1, start_date=date(2024, 1, 1))
    args.update(kwargs)
    with pytest.raises(ValidationError, match=message):
        Employee(**args)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(shares=0), "must have shares"),
        (dict(strike_price=-0.01), "negative"),
        (dict(vesting_months=0), "at least a month"),
        (dict(cliff_months=49), "within vesting"),
        (dict(cliff_months=-1), "within vesting"),
    ],
)
def test_grant_validation(kwargs, message):
    args = dict(shares=100, strike_price=1.0, grant_date=date(2024, 1, 1))
    args.update(kwargs)
    with pytest.raises(ValidationError, match=message):
        EquityGrant(**args)


def test_grant_defaults_are_four_years_with_a_one_year_cliff():
    g = EquityGrant(100, 1.0, date(2024, 1, 1))
    assert (g.vesting_months, g.cliff_months) == (48, 12)


def test_employee_round_trips_through_dict(grant):
    e = Employee("ada", "cto", 150_000, date(2024, 1, 1), end_date=date(2026, 1, 1), grant=grant)
    again = Employee.from_dict(e.to_dict())
    assert again == e


def test_employee_without_grant_round_trips():
    e = Employee("bob", "engineer", 100_000, date(2024, 2, 1))
    d = e.to_dict()
    assert d["grant"] is None and d["end_date"] is None
    assert Employee.from_dict(d) == e


@pytest.mark.parametrize("month,expected", [(-1, 0.0), (0, 1000.0), (1, 1100.0), (2, 1210.0), (12, 3138.43)])
def test_revenue_growth_compounds(month, expected):
    r = RevenueStream("s", 1000.0, date(2024, 1, 1), 0.1)
    assert r.amount_in_month(month) == expected


@pytest.mark.parametrize("kwargs", [dict(monthly_amount=-1), dict(monthly_growth=-1), dict(monthly_growth=10)])
def test_revenue_validation(kwargs):
    args = dict(name="s", monthly_amount=1.0, start_date=date(2024, 1, 1))
    args.update(kwargs)
    with pytest.raises(ValidationError):
        RevenueStream(**args)


def test_expense_rejects_unknown_category():
    with pytest.raises(ValidationError, match="unknown category"):
        Expense("x", 1.0, "lunch")


def test_expense_rejects_negative_amount():
    with pytest.raises(ValidationError):
        Expense("x", -1.0)


def test_company_counts_active_headcount(company):
    assert company.headcount(date(2024, 3, 1)) == 1
    assert company.headcount(date(2025, 4, 1)) == 3


def test_company_refuses_duplicate_hire(company):
    with pytest.raises(ValidationError, match="already works here"):
        company.hire(Employee("ada", "cto", 1, date(2024, 1, 1)))


def test_company_needs_a_name():
    with pytest.raises(ValidationError):
        Company(name="", cash=0)
