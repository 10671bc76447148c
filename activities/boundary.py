"""Where an activity meets Temporal: its definition and the one conversion of its errors.

Every Freightline activity is defined with :func:`defn` instead of
``activity.defn``: the same definition (name, signature, sync or async), with
:func:`freightline.errors.to_application_error` applied to any
``FreightlineError`` that leaves it. So the outcome, retryability and type
of an error are decided by its class, once, and not by each activity. A
decorator rather than a worker interceptor: the conversion then holds
wherever the activity runs, in any worker and in
``temporalio.testing.ActivityEnvironment``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from temporalio import activity

from freightline.errors import FreightlineError, to_application_error

__all__ = ["converts_errors", "defn"]

F = TypeVar("F", bound=Callable[..., Any])

_CONVERTS = "__freightline_converts_errors__"


def defn(*, name: str) -> Callable[[F], F]:
    """``activity.defn(name=name)``, with Freightline's error conversion around the activity."""

    def define(fn: F) -> F:
        return activity.defn(name=name)(_converting(fn))

    return define


def converts_errors(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (an activity function or bound method) was defined with :func:`defn`."""
    return bool(getattr(fn, _CONVERTS, False))


def _converting(fn: F) -> F:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except FreightlineError as err:
                raise to_application_error(err) from err

        setattr(run_async, _CONVERTS, True)
        return cast(F, run_async)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FreightlineError as err:
            raise to_application_error(err) from err

    setattr(run, _CONVERTS, True)
    return cast(F, run)
