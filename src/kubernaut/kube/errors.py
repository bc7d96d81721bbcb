"""What went wrong talking to the API server, as a caller acts on it.

    KubeError               base: what the server said (`code`, `reason`, `message`; 0 and "" when no answer came)
    ├── NotFound            404: the object (or its namespace) does not exist
    ├── Conflict            409 reason Conflict: a precondition failed (resourceVersion, UID); re-read and decide again
    ├── AlreadyExists       409 reason AlreadyExists: a create met a name that is taken
    ├── Refused             every other 4xx (400, 401, 403, 405, 410, 413, 422, ...): rejected for good, the
    │                       same request will be rejected again
    └── Transient           5xx, 408, 429, timeouts and connection errors: worth retrying as it is

`to_kube_error` maps an exception (lightkube's `ApiError`, an httpx error, a timeout) into the tree;
the API verbs in `kubernaut.kube.api` raise nothing else for a failed request.
"""

import httpx2 as httpx
from lightkube.core.exceptions import ApiError


class KubeError(Exception):
    def __init__(self, message: str, *, code: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Refused(KubeError):
    pass


class Transient(KubeError):
    pass


def to_kube_error(exc: BaseException) -> KubeError | None:
    """The error of the tree `exc` is, or None when it is no failed request (a bug, a cancellation)."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiError):
        status = exc.status
        return _from_status(status.code or exc.response.status_code, status.reason or "", status.message or "")
    if isinstance(exc, httpx.HTTPStatusError):  # an answer that is no Status body (a proxy's page)
        response = exc.response
        return _from_status(response.status_code, response.reason_phrase, response.text[:200])
    if isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError):
        return Transient(f"{type(exc).__name__}: {exc}".rstrip(": "))
    return None


def _from_status(code: int, reason: str, message: str) -> KubeError:
    text = message or reason or f"HTTP {code}"
    kind: type[KubeError]
    if code == 404:
        kind = NotFound
    elif code == 409:
        kind = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code in (408, 429) or code >= 500:
        kind = Transient
    elif 400 <= code < 500:
        kind = Refused
    else:  # no error code at all: nothing says a retry would fail
        kind = Transient
    return kind(text, code=code, reason=reason)
