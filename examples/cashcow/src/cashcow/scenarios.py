"""Scenarios: the same company under other assumptions, side by side."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date

from . import cashflow
from .models import Company, Employee


@dataclass
class Scenario:
    name: str
    revenue_multiplier: float = 1.0
    growth_delta: float = 0.0
    expense_multiplier: float = 1.0
    hires: list[Employee] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.revenue_multiplier < 0 or self.expense_multiplier < 0:
            raise ValueError("multipliers cannot be negative")

    def apply(self, company: Company) -> Company:
        c = copy.deepcopy(company)
        c.name = f"{company.name}:{self.name}"
        for r in c.revenue:
            r.monthly_amount = round(r.monthly_amount * self.revenue_multiplier, 2)
            r.monthly_growth = r.monthly_growth + self.growth_delta
        for x in c.expenses:
            x.monthly_amount = round(x.monthly_amount * self.expense_multiplier, 2)
        for h in self.hires:
            c.hire(copy.deepcopy(h))
        return c


def standard_scenarios() -> list[Scenario]:
    return [
        Scenario("base"),
        Scenario("optimistic", revenue_multiplier=1.25, growth_delta=0.02),
        Scenario("pessimistic", revenue_multiplier=0.7, growth_delta=-0.01, expense_multiplier=1.1),
    ]


@dataclass(frozen=True)
class Comparison:
    scenario: str
    ending_cash: float
    runway: int | None
    break_even: date | None


def compare(company: Company, scenarios: list[Scenario], start: date, months: int) -> list[Comparison]:
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ValueError("scenario names must be unique")
    out = []
    for s in scenarios:
        c = s.apply(company)
        flows = cashflow.project(c, start, months)
        out.append(Comparison(s.name, flows[-1].cash if flows else c.cash, cashflow.runway_months(c, start), cashflow.break_even_month(flows)))
    return out


def best(comparisons: list[Comparison]) -> Comparison:
    if not comparisons:
        raise ValueError("nothing to compare")
    return max(comparisons, key=lambda c: c.ending_cash)
