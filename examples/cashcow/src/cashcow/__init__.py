"""CashCow: equity, vesting and cash-flow planning for a small company."""

__version__ = "1.0.0"
