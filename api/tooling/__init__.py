"""The tools a run can be given beyond the client's functions: which tool types a request may name
and how built-ins are stored, and OpenAPI actions at rest (with their sealed credentials)."""
