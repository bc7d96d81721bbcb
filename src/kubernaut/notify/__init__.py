"""Notification channels (console, log, webhook, Slack, email) and the delivery policy."""
