"""The HTTP face: the FastAPI application, thin routers under /v1 (and /api/v1), dependencies as
`Annotated` aliases, and the one handler that turns domain errors into OpenAI error bodies."""
