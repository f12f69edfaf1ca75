"""OpenAPI actions: every operation of a registered OpenAPI 3 document becomes a tool the model can
call; the server performs the HTTP request and hands the response back to the model.

Arguments offered to the model: path, query and header parameters are top-level properties under
their own names (required ones required); a request body is the `body` property (`request_body` if
an operation also has a parameter named `body`). Bodies are sent as JSON (`application/json` and
`+json` types), form data or plain text, whichever the operation declares first in that order;
operations whose required body has none of these types, and cookie parameters, are not offered.
Local `$ref`s are resolved when operations are built; a schema that refers to itself is cut at
the second visit to the same `$ref` (that level accepts any value).

Network safety (the model chooses arguments, the document's author chooses the server):
- Every TCP connection is opened by the network guard, which resolves the host itself, refuses
  the connection if ANY resolved address is not a public unicast address (unless the host, as
  written in the URL, is allow-listed) and then connects to one of the addresses it checked, so
  DNS rebinding between a check and the connect is impossible. TLS still verifies the host name.
- Redirects are followed by hand, each hop through the same guard; credentials are sent only to
  the origin of the document's server. No proxy from the environment is used (a proxy would make
  the connect-time check meaningless).
- Credentials never leave the request headers: they are excluded from repr and dumps, and any
  occurrence of a secret in what the model sees (an echoed header, an error text) is redacted.

Modules: `documents` (parsing, validation, operations), `credentials`, `network_guard`, `tool`.
"""

from tools.openapi_actions.credentials import Credentials
from tools.openapi_actions.documents import operations, parse_document, server_url
from tools.openapi_actions.network_guard import forbidden_address
from tools.openapi_actions.tool import action_tools

__all__ = ["Credentials", "action_tools", "forbidden_address", "operations", "parse_document", "server_url"]
