"""The service's state, one module per resource; models.BatchBackend puts them together."""
