"""Every failed request maps to one error of the tree, carrying what the API server said."""

import httpx2
import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from kubernaut.kube.errors import (
    AlreadyExists,
    Conflict,
    KubeError,
    NotFound,
    Refused,
    Transient,
    to_kube_error,
)

REQUEST = httpx2.Request("POST", "https://127.0.0.1/apis/tekton.dev/v1/namespaces/x/pipelineruns")


def api_error(code: int, reason: str, message: str) -> ApiError:
    """An ApiError as lightkube raises it: from the API server's Status answer."""
    status = Status(apiVersion="v1", kind="Status", status="Failure", code=code, reason=reason, message=message)
    response = httpx2.Response(code, json=status.to_dict(), request=REQUEST)
    return ApiError(request=REQUEST, response=response)


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        pytest.param(404, "NotFound", NotFound, id="404"),
        pytest.param(409, "Conflict", Conflict, id="409-conflict"),
        pytest.param(409, "AlreadyExists", AlreadyExists, id="409-already-exists"),
        pytest.param(400, "BadRequest", Refused, id="400"),
        pytest.param(401, "Unauthorized", Refused, id="401"),
        pytest.param(403, "Forbidden", Refused, id="403"),
        pytest.param(405, "MethodNotAllowed", Refused, id="405"),
        pytest.param(413, "RequestEntityTooLarge", Refused, id="413"),
        pytest.param(422, "Invalid", Refused, id="422"),
        pytest.param(408, "Timeout", Transient, id="408"),
        pytest.param(429, "TooManyRequests", Transient, id="429"),
        pytest.param(500, "InternalError", Transient, id="500"),
        pytest.param(503, "ServiceUnavailable", Transient, id="503"),
        pytest.param(504, "Timeout", Transient, id="504"),
    ],
)
def test_a_status_answer_maps_by_code_and_reason_keeping_what_the_server_said(
    code: int, reason: str, kind: type[KubeError]
) -> None:
    error = to_kube_error(api_error(code, reason, f"the server says {code}"))

    assert type(error) is kind
    assert (error.code, error.reason, error.message) == (code, reason, f"the server says {code}")
    assert str(error) == f"the server says {code}"


def test_a_conflict_without_a_reason_is_a_conflict() -> None:
    assert type(to_kube_error(api_error(409, "", "the object has been modified"))) is Conflict


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(httpx2.ConnectError("connection refused", request=REQUEST), id="connect"),
        pytest.param(httpx2.ReadTimeout("timed out", request=REQUEST), id="read-timeout"),
        pytest.param(httpx2.RemoteProtocolError("server disconnected", request=REQUEST), id="disconnected"),
        pytest.param(TimeoutError(), id="timeout"),
        pytest.param(ConnectionResetError("reset by peer"), id="reset"),
    ],
)
def test_no_answer_is_transient(exc: Exception) -> None:
    error = to_kube_error(exc)

    assert type(error) is Transient
    assert error.code == 0
    assert type(exc).__name__ in str(error)


@pytest.mark.parametrize(("code", "kind"), [(502, Transient), (403, Refused), (404, NotFound)])
def test_an_answer_that_is_no_status_body_maps_by_its_code(code: int, kind: type[KubeError]) -> None:
    """A proxy in front of the API server answers with a page of its own, not a Status."""
    response = httpx2.Response(code, content=b"<html>bad gateway</html>", request=REQUEST)
    exc = httpx2.HTTPStatusError("proxy", request=REQUEST, response=response)

    error = to_kube_error(exc)

    assert type(error) is kind
    assert error.code == code
    assert "bad gateway" in error.message


def test_an_error_of_the_tree_is_itself_and_anything_else_is_no_failed_request() -> None:
    conflict = Conflict("changed", code=409, reason="Conflict")

    assert to_kube_error(conflict) is conflict
    assert to_kube_error(ValueError("a bug")) is None
    assert to_kube_error(KeyError("metadata")) is None
