"""Operator mistakes as one line each: what is wrong and what to change, never a traceback.

The CLI dispatcher passes every exception that escapes a command through `explain`; known ones
become `error: ...` on stderr and an exit code (2: fix the command or its configuration,
1: a service or input failed), anything else keeps its traceback, which is a bug to report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from ingest.settings import CONFIG_ENV, ComponentSettings, ConfigError

USAGE = 2  # the command, its options or its configuration must change
FAILURE = 1  # a service is unreachable or died, or the work failed


@dataclass(frozen=True)
class Explained:
    """An exception rendered for the operator."""

    message: str
    exit_code: int
    # Leave at once, without the libraries' exit handlers: after a service died, threads and
    # kafka-python's at-exit flush would wait on it and print their own tracebacks.
    abandon: bool = False


class PipelineFailed(RuntimeError):
    """A part of a running pipeline failed (a child service died, a recording broke); the message says which."""


def explain(exc: BaseException) -> Explained | None:
    """The one-line message and exit code for an exception an operator can act on, else None."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from ingest.process_sink import ProducerProcessDied
    from ingest.reachability import Unreachable

    if isinstance(exc, ConfigError):
        return Explained(str(exc), USAGE)
    if isinstance(exc, ValidationError):
        return Explained(_validation(exc), USAGE)
    if isinstance(exc, (PipelineFailed, ProducerProcessDied)):
        return Explained(str(exc), FAILURE, abandon=True)
    if isinstance(exc, Unreachable):
        return Explained(str(exc), FAILURE)
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return Explained(f"lost the connection to Redis ({exc}); check that it is running, then run the command "
                         "again", FAILURE)
    return None


def _settings_class(title: str) -> type[ComponentSettings] | None:
    pending = list(ComponentSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls.__name__ == title:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _validation(exc: ValidationError) -> str:
    """A settings validation error as `VARIABLE=value: problem; fix`; other models as `Title: field: problem`."""
    first = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    field = ".".join(str(part) for part in first["loc"]) or "?"
    message = first["msg"].removeprefix("Value error, ")
    cls = _settings_class(exc.title)
    if cls is None:
        return f"invalid {exc.title}: {field}: {message}{more}"
    if first["type"] == "extra_forbidden":
        return (f"unknown setting {field!r} in the [{cls.section}] section of {CONFIG_ENV}; remove it or correct "
                f"its name{more}")
    name = cls.env_name(str(first["loc"][0])) if first["loc"] else cls.__name__
    return (f"{name}={_shown(cls, str(first['loc'][0]) if first['loc'] else '', first.get('input'))}: {message}; "
            f"correct {name} (or {field} in the [{cls.section}] section of {CONFIG_ENV}){more}")


def _shown(cls: type[ComponentSettings], field: str, value: object) -> str:
    """The offending value as typed, unless the field holds a secret."""
    info = cls.model_fields.get(field)
    secret = info is not None and "Secret" in str(info.annotation)
    if secret or re.search(r"(^|_)(password|secret|tokens?)$", field):
        return "***"
    if isinstance(value, str) and "://" in value:
        from ingest.reachability import redact

        value = redact(value)
    return repr(value)
