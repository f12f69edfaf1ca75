"""Wires the assistant graph. Compiled here without a checkpointer (as `langgraph dev` requires);
the API compiles `builder` again with its Postgres saver."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graph.context import Context
from graph.nodes import (
    await_client_tools,
    call_model,
    route_after_model,
    route_after_server_tools,
    run_server_tools,
)
from graph.state import InputState, State

builder = StateGraph(State, context_schema=Context, input_schema=InputState)
builder.add_node("model", call_model)
builder.add_node("server_tools", run_server_tools)
builder.add_node("client_tools", await_client_tools)
builder.add_edge(START, "model")
builder.add_conditional_edges("model", route_after_model, ["server_tools", "client_tools", END])
builder.add_conditional_edges("server_tools", route_after_server_tools, ["client_tools", "model"])
builder.add_edge("client_tools", "model")

graph = builder.compile(name="assistant")
