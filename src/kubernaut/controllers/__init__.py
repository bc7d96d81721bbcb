"""kopf-driven controllers: thin adapters that read objects, call the domain, perform the I/O."""
