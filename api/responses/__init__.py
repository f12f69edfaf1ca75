"""The Responses and Conversations APIs, served by the run engine over the same data.

A conversation is a thread (`conv_X` and `thread_X` name the same row); its items are the thread's
messages, the conversation items the Assistants API has no message for (kept beside them), and the
tool calls of its runs. A response is a run started by `POST /v1/responses`, or the part of a run
after a client's function outputs: execution, durability, recovery, cancel, budgets and tools are
the engine's. This folder maps requests onto threads and runs (`service`, `conversations`), builds
Responses objects from what runs store (`objects`, `items`) and translates a run's Assistants
events into Responses stream events (`translator`, `streams`).
"""
