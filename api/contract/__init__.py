"""The contract's shapes, with no I/O: object ids, request bodies and their limits, the Assistants
objects and their statuses, and the domain errors every layer raises."""
