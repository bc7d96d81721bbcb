"""Kubernetes plumbing: creating clients, the API verbs and their error tree, the informer cache,
the work queue and the Lease elector."""
