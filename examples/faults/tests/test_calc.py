"""A real precision bug: always fails, as a calculation_error."""


def monthly_vesting(shares: int, months: int, price: float) -> float:
    return round(shares / months * price, 2)


def test_equity_vesting_precision():
    assert monthly_vesting(100_000, 48, 1.0) == 2083.34
