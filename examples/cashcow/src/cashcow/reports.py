"""Reports for people: a summary, a cash-flow table (CSV), equity (JSON)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from . import cashflow, equity
from .models import Company


def summary(company: Company, start: date, months: int = 12) -> str:
    flows = cashflow.project(company, start, months)
    runway = cashflow.runway_months(company, start)
    lines = [
        f"Company: {company.name}",
        f"Headcount: {company.headcount(start)}",
        f"Cash today: {company.cash:,.2f}",
        f"Cash in {months} months: {flows[-1].cash:,.2f}" if flows else "No projection",
        f"Monthly burn: {cashflow.burn_rate(flows):,.2f}",
        f"Runway: {runway} months" if runway is not None else "Runway: beyond 120 months",
    ]
    return "\n".join(lines)


def cashflow_csv(company: Company, start: date, months: int) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["month", "revenue", "payroll", "expenses", "net", "cash"])
    for f in cashflow.project(company, start, months):
        w.writerow([f.month.isoformat(), f"{f.revenue:.2f}", f"{f.payroll:.2f}", f"{f.expenses:.2f}", f"{f.net:.2f}", f"{f.cash:.2f}"])
    return out.getvalue()


def equity_report(company: Company, on: date, share_price: float) -> str:
    rows = []
    for e in company.employees:
        if e.grant is None:
            continue
        rows.append(
            {
                "name": e.name,
                "granted": e.grant.shares,
                "vested": equity.vested_shares(e.grant, on),
                "intrinsic_value": equity.intrinsic_value(e.grant, on, share_price),
            }
        )
    rows.sort(key=lambda r: (-r["vested"], r["name"]))
    return json.dumps({"as_of": on.isoformat(), "share_price": share_price, "holders": rows}, indent=2)
