import csv
import io
import json
from datetime import date

import pytest

from cashcow import cashflow, reports

START = date(2025, 1, 1)


def test_summary_names_the_company_and_headcount(company):
    text = reports.summary(company, START)
    assert "Company: acme" in text
    assert "Headcount: 2" in text


def test_summary_shows_cash_with_separators(company):
    assert "Cash today: 500,000.00" in reports.summary(company, START)


def test_summary_runway_line(company):
    text = reports.summary(company, START)
    runway = cashflow.runway_months(company, START)
    expected = f"Runway: {runway} months" if runway is not None else "Runway: beyond 120 months"
    assert expected in text


def test_summary_without_projection(company):
    assert "No projection" in reports.summary(company, START, months=0)


@pytest.mark.parametrize("months", [1, 6, 24])
def test_csv_has_a_row_per_month(company, months):
    rows = list(csv.reader(io.StringIO(reports.cashflow_csv(company, START, months))))
    assert rows[0] == ["month", "revenue", "payroll", "expenses", "net", "cash"]
    assert len(rows) == months + 1


def test_csv_values_match_the_projection(company):
    rows = list(csv.DictReader(io.StringIO(reports.cashflow_csv(company, START, 3))))
    flows = cashflow.project(company, START, 3)
    assert [float(r["cash"]) for r in rows] == [f.cash for f in flows]


def test_equity_report_lists_only_holders(company):
    data = json.loads(reports.equity_report(company, date(2025, 1, 1), 2.0))
    assert [h["name"] for h in data["holders"]] == ["ada"]


def test_equity_report_values(company):
    data = json.loads(reports.equity_report(company, date(2025, 1, 1), 2.0))
    assert data["holders"][0]["vested"] == 12_000
    assert data["holders"][0]["intrinsic_value"] == 12_000.0
    assert data["share_price"] == 2.0 and data["as_of"] == "2025-01-01"


def test_equity_report_orders_by_vested(company, grant):
    from cashcow.models import EquityGrant, Employee

    company.hire(Employee("zed", "eng", 1, date(2024, 1, 1), grant=EquityGrant(96_000, 1.0, date(2023, 1, 1))))
    data = json.loads(reports.equity_report(company, date(2025, 1, 1), 2.0))
    assert [h["name"] for h in data["holders"]] == ["zed", "ada"]
