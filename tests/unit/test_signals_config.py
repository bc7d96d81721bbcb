"""The gateway section of the settings."""

import pytest

from kubernaut.config import parse_settings
from kubernaut.errors import ConfigError


def test_gateway_defaults() -> None:
    gateway = parse_settings(None).gateway
    assert gateway.listen == "127.0.0.1:8080"
    assert gateway.namespace == "kubernaut-system"
    assert (gateway.max_body_bytes, gateway.max_alerts) == (1024 * 1024, 1000)
    assert not gateway.auth_disabled


def test_every_gateway_key() -> None:
    gateway = parse_settings(
        {
            "gateway": {
                "listen": "[::1]:8443",
                "namespace": "intake",
                "bearerTokenSecret": "kubernaut-system/gateway-token:token",
                "tlsCertFile": "/tls/tls.crt",
                "tlsKeyFile": "/tls/tls.key",
                "maxBodyBytes": 2048,
                "maxAlerts": 5,
                "concurrency": 4,
            }
        }
    ).gateway
    assert gateway.bearer_token_secret == "kubernaut-system/gateway-token:token"
    assert (gateway.listen, gateway.max_alerts) == ("[::1]:8443", 5)


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"listen": "8080"}, "'gateway.listen'"),
        ({"listen": "host:99999"}, "'gateway.listen'"),
        ({"bearerTokenSecret": "just-a-name"}, "'gateway.bearerTokenSecret'.*namespace/name:key"),
        ({"bearerTokenFile": "/t", "bearerTokenSecret": "a/b:c"}, "not both"),
        ({"tlsCertFile": "/tls.crt"}, "go together"),
        ({"maxBodyBytes": 10}, "'gateway.maxBodyBytes'"),
        ({"maxAlerts": 0}, "'gateway.maxAlerts'"),
        ({"token": "x"}, "unknown configuration key 'gateway.token'"),
    ],
)
def test_bad_gateway_values_name_the_key(gateway: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings({"gateway": gateway})
