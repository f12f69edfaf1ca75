"""Encoders at the edge: a stream of the run engine's values (`KeptEvent`s, Responses events) →
one transport's wire. Pure functions of the events they are given; the framing of SSE is `sse.py`."""
