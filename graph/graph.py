"""Wires the assistant graph. Compiled here without a checkpointer (as `langgraph dev` requires);
the API compiles `builder` again with its Postgres saver."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graph.context import Context
from graph.node_names import CLIENT_TOOLS, MODEL, SERVER_TOOLS
from graph.nodes import (
    await_client_tools,
    call_model,
    route_after_model,
    route_after_server_tools,
    run_server_tools,
)
from graph.state import InputState, State

builder = StateGraph(State, context_schema=Context, input_schema=InputState)
builder.add_node(MODEL, call_model)
builder.add_node(SERVER_TOOLS, run_server_tools)
builder.add_node(CLIENT_TOOLS, await_client_tools)
builder.add_edge(START, MODEL)
builder.add_conditional_edges(MODEL, route_after_model, [SERVER_TOOLS, CLIENT_TOOLS, END])
builder.add_conditional_edges(SERVER_TOOLS, route_after_server_tools, [CLIENT_TOOLS, MODEL])
builder.add_edge(CLIENT_TOOLS, MODEL)

graph = builder.compile(name="assistant")
