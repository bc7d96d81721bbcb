"""Alertmanager webhook intake: alerts in, RemediationRequests out."""
