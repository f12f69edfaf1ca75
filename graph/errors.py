"""Why a run can stop inside the graph for reasons of its own (not the provider's): each carries a
message a person can act on, naming the setting involved."""

from __future__ import annotations


class RunStopped(Exception):
    """Base of the graph's own reasons to end a run as failed."""


class ModelCallLimitReached(RunStopped):
    def __init__(self, calls: int):
        super().__init__(
            f"The run made {calls} model calls, the most one run may make (ASSISTGRAPH_MAX_MODEL_CALLS), "
            "and was stopped: the model kept calling tools without answering."
        )


class ModelCallTimedOut(RunStopped):
    def __init__(self, seconds: float):
        super().__init__(
            f"The model call did not finish within {seconds:g} seconds (ASSISTGRAPH_MODEL_TIMEOUT)."
        )


class ModelStalled(RunStopped):
    def __init__(self, seconds: float, chunks: int):
        super().__init__(
            f"The model stopped sending its response: nothing arrived for {seconds:g} seconds after "
            f"{chunks} chunks (ASSISTGRAPH_MODEL_CHUNK_TIMEOUT)."
        )


class ModelSilent(RunStopped):
    def __init__(self, seconds: float, endpoint: str | None):
        where = f"at {endpoint} " if endpoint else ""
        super().__init__(
            f"The model {where}sent nothing within {seconds:g} seconds of the request "
            "(ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT): it may be loading, overloaded or stuck."
        )
