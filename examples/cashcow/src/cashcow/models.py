"""Domain models: employees, equity grants, revenue and expense lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date


class ValidationError(ValueError):
    """A model was given values that cannot describe a real thing."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


@dataclass(frozen=True)
class EquityGrant:
    shares: int
    strike_price: float
    grant_date: date
    vesting_months: int = 48
    cliff_months: int = 12

    def __post_init__(self) -> None:
        _require(self.shares > 0, "a grant must have shares")
        _require(self.strike_price >= 0, "strike price cannot be negative")
        _require(self.vesting_months > 0, "vesting must last at least a month")
        _require(0 <= self.cliff_months <= self.vesting_months, "the cliff must fall within vesting")


@dataclass
class Employee:
    name: str
    role: str
    salary: float
    start_date: date
    end_date: date | None = None
    grant: EquityGrant | None = None
    benefits_rate: float = 0.2

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "an employee needs a name")
        _require(self.salary >= 0, "salary cannot be negative")
        _require(0 <= self.benefits_rate <= 1, "benefits rate is a fraction")
        if self.end_date is not None:
            _require(self.end_date >= self.start_date, "an employee cannot leave before starting")

    @property
    def monthly_cost(self) -> float:
        return round(self.salary * (1 + self.benefits_rate) / 12, 2)

    def is_active(self, on: date) -> bool:
        if on < self.start_date:
            return False
        return self.end_date is None or on <= self.end_date

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["end_date"] = self.end_date.isoformat() if self.end_date else None
        if self.grant:
            d["grant"]["grant_date"] = self.grant.grant_date.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Employee":
        grant = None
        if d.get("grant"):
            g = dict(d["grant"])
            g["grant_date"] = date.fromisoformat(g["grant_date"])
            grant = EquityGrant(**g)
        return cls(
            name=d["name"],
            role=d["role"],
            salary=d["salary"],
            start_date=date.fromisoformat(d["start_date"]),
            end_date=date.fromisoformat(d["end_date"]) if d.get("end_date") else None,
            grant=grant,
            benefits_rate=d.get("benefits_rate", 0.2),
        )


@dataclass
class RevenueStream:
    name: str
    monthly_amount: float
    start_date: date
    monthly_growth: float = 0.0

    def __post_init__(self) -> None:
        _require(self.monthly_amount >= 0, "revenue cannot be negative")
        _require(-1 < self.monthly_growth < 10, "growth rate out of range")

    def amount_in_month(self, months_since_start: int) -> float:
        if months_since_start < 0:
            return 0.0
        return round(self.monthly_amount * (1 + self.monthly_growth) ** months_since_start, 2)


@dataclass
class Expense:
    name: str
    monthly_amount: float
    category: str = "operations"
    one_time: bool = False

    def __post_init__(self) -> None:
        _require(self.monthly_amount >= 0, "an expense cannot be negative")
        _require(self.category in {"operations", "facilities", "software", "marketing"}, f"unknown category {self.category!r}")


@dataclass
class Company:
    name: str
    cash: float
    employees: list[Employee] = field(default_factory=list)
    revenue: list[RevenueStream] = field(default_factory=list)
    expenses: list[Expense] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "a company needs a name")

    def headcount(self, on: date) -> int:
        return sum(1 for e in self.employees if e.is_active(on))

    def hire(self, employee: Employee) -> None:
        if any(e.name == employee.name for e in self.employees):
            raise ValidationError(f"{employee.name} already works here")
        self.employees.append(employee)
