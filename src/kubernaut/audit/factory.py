"""Open the audit sink named by `audit.url`."""

import contextlib
from collections.abc import AsyncIterator

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.store import AuditSink
from kubernaut.config import AuditConfig
from kubernaut.errors import ConfigError


@contextlib.asynccontextmanager
async def open_audit_sink(config: AuditConfig) -> AsyncIterator[AuditSink]:
    if config.url.startswith("memory://"):
        yield MemoryAuditSink()
        return
    raise ConfigError(f"audit.url {config.url!r}: this store is not available in this build")
