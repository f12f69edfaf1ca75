"""The assistant as a LangGraph state machine. Knows nothing of HTTP or SQL."""
