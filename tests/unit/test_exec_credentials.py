"""Reading what an exec plugin prints, and fetching its token again when it expires or is refused."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from lightkube.core.exceptions import ConfigError

from kubernaut.kube.credentials import ExecCredential, ExecPlugin, ExecTokenAuth, parse_exec_credential

V1 = "client.authentication.k8s.io/v1"


def printed(status: dict[str, str], api_version: str = V1) -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}).encode()


def test_a_token_with_its_expiry() -> None:
    found = parse_exec_credential(printed({"token": "t", "expirationTimestamp": "2030-01-02T03:04:05Z"}), V1)
    assert found == ExecCredential(token="t", expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert found.fresh(datetime(2030, 1, 2, 3, 0, tzinfo=UTC))
    assert not found.fresh(datetime(2030, 1, 2, 3, 4, tzinfo=UTC))  # within the margin


def test_a_client_certificate() -> None:
    found = parse_exec_credential(printed({"clientCertificateData": "CERT", "clientKeyData": "KEY"}), V1)
    assert (found.client_certificate, found.client_key, found.token) == ("CERT", "KEY", None)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (b"not json", "no ExecCredential"),
        (printed({}), "neither a token nor a client certificate"),
        (printed({"clientCertificateData": "CERT"}), "without its key"),
        (printed({"token": "t"}, "client.authentication.k8s.io/v1beta1"), "not client.authentication.k8s.io/v1"),
        (printed({"token": "t", "expirationTimestamp": "soon"}), "bad expirationTimestamp"),
    ],
)
def test_what_a_plugin_printed_wrong_is_named(output: bytes, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_exec_credential(output, V1)


def script(path: Path, body: str) -> ExecPlugin:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o700)
    return ExecPlugin(V1, (str(path),), {"PATH": "/usr/bin:/bin", "KUBERNETES_EXEC_INFO": "{}"})


async def test_a_refused_token_is_fetched_again_once(tmp_path: Path) -> None:
    # The plugin prints a new token each run: t1, t2, ...
    counter = tmp_path / "runs"
    plugin = script(
        tmp_path / "plugin",
        f'echo x >> {counter}; n=$(wc -l < {counter}); printf \'{{"status": {{"token": "t%s"}}}}\' "$n"',
    )
    seen: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers["Authorization"])
        return httpx2.Response(200 if request.headers["Authorization"] == "Bearer t2" else 401)

    auth = ExecTokenAuth(plugin, await plugin.run_async())
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer), auth=auth) as client:
        assert (await client.get("https://api/")).status_code == 200
        assert (await client.get("https://api/")).status_code == 200
    assert seen == ["Bearer t1", "Bearer t2", "Bearer t2"]


async def test_an_expired_token_is_fetched_before_it_is_sent(tmp_path: Path) -> None:
    plugin = script(tmp_path / "plugin", 'printf \'{"status": {"token": "new"}}\'')
    expired = ExecCredential(token="old", expires=datetime.now(UTC) - timedelta(seconds=1))
    seen: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers["Authorization"])
        return httpx2.Response(200)

    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(answer), auth=ExecTokenAuth(plugin, expired)
    ) as client:
        await client.get("https://api/")
    assert seen == ["Bearer new"]


def test_a_failing_plugin_says_why(tmp_path: Path) -> None:
    plugin = script(tmp_path / "plugin", "echo 'no session, run login' >&2; exit 3")
    with pytest.raises(ConfigError, match="exited with 3: no session, run login"):
        plugin.run()
