"""Synthetic companies at scale, and the measurements the performance tasks report."""

from __future__ import annotations

import json
import os
import random
import time
import tracemalloc
from datetime import date

from . import cashflow
from .models import Company, EquityGrant, Employee, Expense, RevenueStream


def synthetic_company(employees: int, seed: int = 7) -> Company:
    rng = random.Random(seed)
    c = Company(name=f"synthetic-{employees}", cash=5_000_000.0)
    for i in range(employees):
        start = date(2020 + rng.randrange(4), rng.randrange(1, 13), 1)
        grant = EquityGrant(shares=rng.randrange(1_000, 50_000), strike_price=0.5, grant_date=start)
        c.employees.append(Employee(f"e{i}", "engineer", rng.randrange(60_000, 200_000), start, grant=grant))
    c.revenue.append(RevenueStream("product", 50_000.0 + employees * 100, date(2020, 1, 1), 0.02))
    c.expenses.append(Expense("office", 10_000.0 + employees * 50, "facilities"))
    return c


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - t0, value


def peak_memory(fn, *args, **kwargs) -> int:
    """Peak bytes allocated by Python while fn runs."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def streaming_total(company: Company, start: date, months: int) -> float:
    return sum(f.net for f in cashflow.iter_projection(company, start, months))


def list_total(company: Company, start: date, months: int) -> float:
    return sum(f.net for f in cashflow.project(company, start, months))


def record_metric(name: str, value: float) -> None:
    """Adds a metric to the file testfleet named in $TESTFLEET_METRICS."""
    path = os.environ.get("TESTFLEET_METRICS")
    if not path:
        return
    metrics = {}
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
    metrics[name] = value
    with open(path, "w") as f:
        json.dump(metrics, f)
