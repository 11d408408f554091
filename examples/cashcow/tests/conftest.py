import sys
from datetime import date
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cashcow.models import Company, EquityGrant, Employee, Expense, RevenueStream  # noqa: E402
from cashcow.storage import Store  # noqa: E402

START = date(2025, 1, 1)


@pytest.fixture
def grant():
    return EquityGrant(shares=48_000, strike_price=1.0, grant_date=date(2024, 1, 1))


@pytest.fixture
def company(grant):
    c = Company(name="acme", cash=500_000.0)
    c.hire(Employee("ada", "cto", 180_000, date(2024, 1, 1), grant=grant))
    c.hire(Employee("bob", "engineer", 120_000, date(2024, 6, 1)))
    c.hire(Employee("cy", "sales", 90_000, date(2025, 3, 1), benefits_rate=0.1))
    c.revenue.append(RevenueStream("subscriptions", 20_000.0, date(2024, 1, 1), 0.05))
    c.expenses.append(Expense("office", 5_000.0, "facilities"))
    c.expenses.append(Expense("laptops", 12_000.0, "operations", one_time=True))
    return c


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.fixture
def populated(store, company):
    names = []
    for i in range(8):
        company.name = f"acme{i}"
        company.cash = 100_000.0 * (i + 1)
        store.save(company)
        names.append(company.name)
    return names
