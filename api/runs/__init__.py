"""The run engine: creating, resuming and cancelling runs; the executor that drives the checkpointed
graph; the pure mapper from graph events to Assistants events; the sink that stores and publishes
them; and the hub that fans them out to SSE streams in every process."""
