"""The OpenAI-compatible HTTP facade over the run engine."""
