"""A real logic bug: always fails, as a logic_error."""


def status_after_termination(active: bool) -> str:
    return "active" if active else "terminated"


def test_terminated_employee_is_inactive():
    assert status_after_termination(active=True) == "terminated"
