"""Monthly cash-flow projection: revenue, payroll, expenses, runway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Iterator

from .equity import months_between
from .models import Company


def add_months(d: date, months: int) -> date:
    month = d.month - 1 + months
    year = d.year + month // 12
    return date(year, month % 12 + 1, 1)


@dataclass(frozen=True)
class MonthFlow:
    month: date
    revenue: float
    payroll: float
    expenses: float
    net: float
    cash: float


def payroll(company: Company, month: date) -> float:
    return round(sum(e.monthly_cost for e in company.employees if e.is_active(month)), 2)


def revenue(company: Company, month: date) -> float:
    total = 0.0
    for r in company.revenue:
        if month >= date(r.start_date.year, r.start_date.month, 1):
            total += r.amount_in_month(months_between(date(r.start_date.year, r.start_date.month, 1), month))
    return round(total, 2)


def recurring_expenses(company: Company, first_month: bool) -> float:
    return round(sum(x.monthly_amount for x in company.expenses if first_month or not x.one_time), 2)


def iter_projection(company: Company, start: date, months: int) -> Iterator[MonthFlow]:
    """One month at a time, so long projections need no list in memory."""
    if months < 0:
        raise ValueError("months cannot be negative")
    cash = company.cash
    for i in range(months):
        month = add_months(start, i)
        rev = revenue(company, month)
        pay = payroll(company, month)
        exp = recurring_expenses(company, first_month=(i == 0))
        net = round(rev - pay - exp, 2)
        cash = round(cash + net, 2)
        yield MonthFlow(month, rev, pay, exp, net, cash)


def project(company: Company, start: date, months: int) -> list[MonthFlow]:
    return list(iter_projection(company, start, months))


def burn_rate(flows: list[MonthFlow]) -> float:
    """Average monthly cash consumed (0 if the company makes money)."""
    if not flows:
        return 0.0
    average_net = sum(f.net for f in flows) / len(flows)
    return round(max(-average_net, 0.0), 2)


def runway_months(company: Company, start: date, horizon: int = 120) -> int | None:
    """Months until cash runs out, or None if it lasts past the horizon."""
    for i, flow in enumerate(iter_projection(company, start, horizon)):
        if flow.cash < 0:
            return i
    return None


def break_even_month(flows: list[MonthFlow]) -> date | None:
    for f in flows:
        if f.net >= 0:
            return f.month
    return None
