"""The controllers: thin adapters that read objects from their caches, call the domain, perform the I/O."""
