from __future__ import annotations

import pytest

from harness.backends.engine_api import EngineAPIError
from harness.backends.retry import transient_retry
from harness.errors import BackendUnavailable


def test_transient_errors_are_retried_a_bounded_number_of_times() -> None:
    calls = []

    @transient_retry
    def busy() -> str:
        calls.append(1)
        raise EngineAPIError("POST", "/containers/create", 503, "busy")

    with pytest.raises(EngineAPIError):
        busy()
    assert len(calls) == 4


def test_recovers_when_the_engine_does() -> None:
    calls = []

    @transient_retry
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise EngineAPIError("POST", "/x", 500, "oops")
        return "ok"

    assert flaky() == "ok"
    assert len(calls) == 2


@pytest.mark.parametrize(
    "error",
    [
        EngineAPIError("POST", "/x", 404, "no such image"),
        EngineAPIError("POST", "/x", 409, "conflict"),
        BackendUnavailable("down"),
    ],
)
def test_other_errors_fail_at_once(error: Exception) -> None:
    calls = []

    @transient_retry
    def broken() -> str:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        broken()
    assert len(calls) == 1
