"""pydantic models of every custom resource: the source of truth for the CRDs."""
