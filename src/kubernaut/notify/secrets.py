"""Reading one key of a Secret (`namespace/name:key`); the value is never logged."""

import base64
import binascii

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Secret

from kubernaut.errors import KubernautError


class SecretUnavailableError(KubernautError):
    """The referenced Secret key could not be read; the message names the reference, not the value."""


def parse_secret_ref(ref: str) -> tuple[str, str, str]:
    """`namespace/name:key` -> (namespace, name, key)."""
    location, _, key = ref.partition(":")
    namespace, _, name = location.partition("/")
    if not (namespace and name and key):
        raise SecretUnavailableError(f"secret reference {ref!r} is not 'namespace/name:key'")
    return namespace, name, key


async def fetch_secret_value(client: AsyncClient, ref: str) -> str:
    namespace, name, key = parse_secret_ref(ref)
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as exc:
        raise SecretUnavailableError(
            f"cannot read Secret {namespace}/{name}: {exc.status.reason or exc.status.code}"
        ) from None
    if secret.data and key in secret.data:
        try:
            return base64.b64decode(secret.data[key], validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnavailableError(f"Secret {namespace}/{name} key {key!r} is not valid UTF-8") from None
    if secret.stringData and key in secret.stringData:
        return str(secret.stringData[key]).strip()
    raise SecretUnavailableError(f"Secret {namespace}/{name} has no key {key!r}")
