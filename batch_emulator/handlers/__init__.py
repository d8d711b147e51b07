"""The HTTP handlers, one module per resource; responses.BatchResponses puts them together."""
