"""Kubernetes plumbing: creating clients, patching status, the informer cache, the work queue and the Lease elector."""
