"""Bearer tokens for the gateway: generate one and store it for local use."""

import os
import secrets
from pathlib import Path


def generate_token() -> str:
    """A random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str | None = None) -> str:
    """Write a token (a new one unless given) readable by the owner only; returns it."""
    value = token or generate_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)
    return value
