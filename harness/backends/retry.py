"""Retries for engine calls: bounded, with backoff, and only for transient failures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from harness.backends.engine_api import EngineAPIError

P = ParamSpec("P")
R = TypeVar("R")


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, EngineAPIError) and error.transient


@functools.cache
def _retrying() -> Any:
    # tenacity is imported on the first engine call, not at start-up
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    return Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=0.8),
        reraise=True,
    )


def transient_retry(func: Callable[P, R]) -> Callable[P, R]:
    """Up to 4 attempts, 0.1 s → 0.8 s apart, when the engine answers 5xx; anything else fails at once.

    The first attempt runs without tenacity: importing it costs ~40 ms, and most calls succeed.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except EngineAPIError as error:
            if not error.transient:
                raise
        retrying = _retrying().copy(stop=_stop_after(3))  # the three attempts left
        result: R = retrying(func, *args, **kwargs)
        return result

    return wrapper


def _stop_after(attempts: int) -> Any:
    from tenacity import stop_after_attempt

    return stop_after_attempt(attempts)
