"""A small JSON store for companies: atomic writes, listing, a read cache."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date
from pathlib import Path

from .models import Company, Employee, Expense, RevenueStream


class StorageError(Exception):
    """The store could not read or write what was asked."""


def company_to_dict(c: Company) -> dict:
    return {
        "name": c.name,
        "cash": c.cash,
        "employees": [e.to_dict() for e in c.employees],
        "revenue": [
            {"name": r.name, "monthly_amount": r.monthly_amount, "start_date": r.start_date.isoformat(), "monthly_growth": r.monthly_growth}
            for r in c.revenue
        ],
        "expenses": [{"name": x.name, "monthly_amount": x.monthly_amount, "category": x.category, "one_time": x.one_time} for x in c.expenses],
    }


def company_from_dict(d: dict) -> Company:
    try:
        return Company(
            name=d["name"],
            cash=d["cash"],
            employees=[Employee.from_dict(e) for e in d.get("employees", [])],
            revenue=[
                RevenueStream(r["name"], r["monthly_amount"], date.fromisoformat(r["start_date"]), r.get("monthly_growth", 0.0))
                for r in d.get("revenue", [])
            ],
            expenses=[Expense(**x) for x in d.get("expenses", [])],
        )
    except (KeyError, TypeError) as e:
        raise StorageError(f"not a company record: {e}") from e


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, Company] = {}
        self.reads = 0

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise StorageError(f"invalid record name {name!r}")
        return self.root / f"{name}.json"

    def save(self, company: Company) -> Path:
        path = self._path(company.name)
        data = json.dumps(company_to_dict(company), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise StorageError(f"cannot save {company.name}: {e}") from e
        self._cache.pop(company.name, None)
        return path

    def load(self, name: str) -> Company:
        if name in self._cache:
            return self._cache[name]
        path = self._path(name)
        if not path.exists():
            raise StorageError(f"no company named {name!r}")
        self.reads += 1
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StorageError(f"{path.name} is corrupt: {e}") from e
        company = company_from_dict(record)
        self._cache[name] = company
        return company

    def delete(self, name: str) -> bool:
        self._cache.pop(name, None)
        path = self._path(name)
        if path.exists():
            path.unlink()
            return True
        return False

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))
