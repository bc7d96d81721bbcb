"""Alertmanager webhook intake: alerts in, RemediationRequests out."""

from kubernaut.gateway.server import ALERTMANAGER_PATH, GatewayServer
from kubernaut.gateway.token import generate_token, write_token_file

__all__ = ["ALERTMANAGER_PATH", "GatewayServer", "generate_token", "write_token_file"]
