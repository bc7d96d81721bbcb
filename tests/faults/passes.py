"""Counting reconcile passes and their failures per key, to tell a hot loop from a quiet controller."""

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kubernaut.controllers.manager import Manager
from kubernaut.kube.runtime import Result

TRACEBACK_LOGGERS = ("kubernaut",)


@dataclass
class Passes:
    """Reconcile passes per (controller, key), failed passes, and what the controllers logged."""

    passes: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    records: list[logging.LogRecord] = field(default_factory=list)

    def of(self, controller: str, key: str) -> int:
        return self.passes[(controller, key)]

    def busiest(self, controller: str, keys: set[str] | None = None) -> tuple[str, int]:
        counts = [(k, n) for (c, k), n in self.passes.items() if c == controller and (keys is None or k in keys)]
        return max(counts, key=lambda item: item[1], default=("", 0))

    def crashes(self) -> list[str]:
        """Log records that carry a traceback or say something crashed: a controller must never."""
        return [
            f"{r.name}: {r.getMessage()[:300]}"
            for r in self.records
            if r.exc_info is not None or r.levelno >= logging.CRITICAL or "Traceback" in r.getMessage()
        ]

    def warnings(self, needle: str = "") -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING and needle in r.getMessage()]


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextmanager
def counting(manager: Manager) -> Iterator[Passes]:
    """Wrap every controller's reconcile of a running manager; collect warnings of our loggers."""
    passes = Passes()
    for controller in manager.controllers:
        inner = controller.reconcile
        name = controller.name

        async def counted(key: str, inner=inner, name=name) -> Result:  # type: ignore[no-untyped-def]
            passes.passes[(name, key)] += 1
            try:
                return await inner(key)
            except Exception:
                passes.failures[(name, key)] += 1
                raise

        controller.reconcile = counted
    handler = _Collect(passes.records)
    loggers = [logging.getLogger(name) for name in TRACEBACK_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield passes
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
