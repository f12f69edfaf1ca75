"""Files and what is made of them: uploads on disk and their rows, vector stores with their files and
batches, the background ingestion jobs that fill them, hybrid search over them, and the
`tool_resources` that point runs at them."""
