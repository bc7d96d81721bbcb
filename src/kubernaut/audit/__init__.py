"""Audit trail adapters: the AuditSink port and its stores."""
