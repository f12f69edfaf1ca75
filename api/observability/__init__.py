"""Watching the server run: logging set-up, Prometheus metrics, OpenTelemetry and LangSmith traces.

The lowest folder of `api/`: every other folder may record into it, and it imports none of them.
"""
