"""Vesting schedules and the value of equity."""

from __future__ import annotations

from datetime import date

from .models import EquityGrant


def months_between(start: date, end: date) -> int:
    """Whole months from start to end (0 if end is before start)."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day < start.day:
        months -= 1
    return max(months, 0)


def vested_shares(grant: EquityGrant, on: date) -> int:
    """Shares vested on a date: nothing before the cliff, then monthly."""
    elapsed = months_between(grant.grant_date, on)
    if elapsed < grant.cliff_months:
        return 0
    if elapsed >= grant.vesting_months:
        return grant.shares
    return grant.shares * elapsed // grant.vesting_months


def vesting_schedule(grant: EquityGrant) -> list[tuple[int, int]]:
    """(month, cumulative vested shares) for each month of the vesting period."""
    schedule = []
    for month in range(1, grant.vesting_months + 1):
        if month < grant.cliff_months:
            vested = 0
        else:
            vested = grant.shares * month // grant.vesting_months
        schedule.append((month, vested))
    return schedule


def monthly_vesting_amount(grant: EquityGrant, share_price: float) -> float:
    """Value that vests in an ordinary month after the cliff, rounded to cents."""
    return round(grant.shares / grant.vesting_months * share_price, 2)


def exercise_cost(grant: EquityGrant, shares: int) -> float:
    if shares < 0:
        raise ValueError("cannot exercise a negative number of shares")
    if shares > grant.shares:
        raise ValueError("cannot exercise more shares than granted")
    return round(shares * grant.strike_price, 2)


def intrinsic_value(grant: EquityGrant, on: date, share_price: float) -> float:
    """Gain on the vested shares if exercised at share_price (never negative)."""
    gain_per_share = max(share_price - grant.strike_price, 0.0)
    return round(vested_shares(grant, on) * gain_per_share, 2)


def dilution(existing_shares: int, new_shares: int) -> float:
    """Fraction of the company that existing holders give up."""
    if existing_shares <= 0:
        raise ValueError("a company has shares")
    if new_shares < 0:
        raise ValueError("cannot issue negative shares")
    return new_shares / (existing_shares + new_shares)
