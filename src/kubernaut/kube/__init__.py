"""Kubernetes plumbing: creating clients, patching status, the informer cache and the work queue."""
