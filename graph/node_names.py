"""The names of the graph's nodes: the graph is wired with them, its routes return them, and the
API reads them in the graph's stream (which node a chunk or an update comes from)."""

MODEL = "model"
SERVER_TOOLS = "server_tools"
CLIENT_TOOLS = "client_tools"
