"""Named crash points for fault-injection runs.

`KUBERNAUT_FAULT_EXIT_AFTER=<point>:<n>[,<point>:<n>...]` makes the process die abruptly (exit code
137, no cleanup, as `kill -9` would) the n-th time it reaches `<point>`. Without the variable every
crash point is a no-op. The variable is read here and nowhere else, once, at import.

Points: `orchestrator.execution-created` (the WorkflowExecution exists, the request does not say so
yet), `orchestrator.terminal-recorded` (the final audit event is recorded, the final status is not
written), `executor.pipelinerun-created` (the PipelineRun exists, the WorkflowExecution is not
Running yet), `executor.terminal-written` (the terminal status is written, its audit event may still
be in the outbox), `executor.cooldown-waiting` (the run ended, the lock is held for the cooldown).
"""

import logging
import os

ENV_VAR = "KUBERNAUT_FAULT_EXIT_AFTER"
EXIT_CODE = 137

log = logging.getLogger(__name__)


def parse_fault_spec(value: str) -> dict[str, int]:
    """`a:1,b:3` -> {"a": 1, "b": 3}; a bare name means its first pass. Malformed entries raise ValueError."""
    points: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = entry.partition(":")
        passes = int(count) if count.isdigit() else (1 if not count else 0)
        if not name or passes < 1:
            raise ValueError(f"{ENV_VAR}: bad entry {entry!r}; expected <point>:<n> with n >= 1")
        points[name] = passes
    return points


_remaining = parse_fault_spec(os.environ.get(ENV_VAR, ""))


def crash_point(name: str) -> None:
    """Die here if the fault spec says so (the n-th time this point is reached)."""
    if name not in _remaining:
        return
    _remaining[name] -= 1
    if _remaining[name] > 0:
        return
    log.warning("Fault injection: exiting abruptly at %s", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_CODE)
