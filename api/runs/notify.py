"""The NOTIFY wire format: how kept events travel from the process that stored them to the
processes holding their streams, on one Postgres channel.

A notification is "<run id><US><number of the first event><US><event><RS><event>...", each event
"<event name><US><data>", where data is the event's JSON, or "@" when it is too large for NOTIFY's
8000 bytes (read it from `run_events`); the events of one notification are numbered consecutively.
JSON text never holds raw control characters, so neither separator can occur in it. A key's
revocation is "!revoked<US><key id>".
"""

from __future__ import annotations

from psycopg import AsyncConnection

from api.runs.events import EventData, KeptEvent

CHANNEL = "assistgraph_events"
# NOTIFY's limit is 8000 bytes; leave room for the envelope.
MAX_INLINE = 7000

NOTIFY = "SELECT pg_notify(%s, %s)"

_SEP = "\x1f"
_RS = "\x1e"
_TOO_LARGE = "@"
_REVOKED = "!revoked"


def bodies(published: list[tuple[str, str]]) -> tuple[list[int], list[str]]:
    """The notification bodies of a batch of (event name, data JSON): consecutive events, as many
    as fit in one NOTIFY (the statement that keeps them prefixes each body with the run id and the
    number of its first event). Returns (the position in the batch of each body's first event, the
    bodies)."""
    firsts: list[int] = []
    out: list[str] = []
    parts: list[str] = []
    size = 0
    for position, (name, data) in enumerate(published, start=1):
        length = len(data) if data.isascii() else len(data.encode())
        if length > MAX_INLINE:
            data, length = _TOO_LARGE, 1
        length += len(name) + 2
        if parts and size + length > MAX_INLINE:
            out.append(_RS.join(parts))
            parts, size = [], 0
        if not parts:
            firsts.append(position)
        parts.append(f"{name}{_SEP}{data}")
        size += length
    if parts:
        out.append(_RS.join(parts))
    return firsts, out


async def publish_revocation(conn: AsyncConnection, key_id: str) -> None:
    """Tell every API process that streams opened with this key must end."""
    await conn.execute(NOTIFY, (CHANNEL, f"{_REVOKED}{_SEP}{key_id}"))


def notification_run(payload: str) -> str | None:
    """The run a notification is about (None for a key's revocation), without decoding it."""
    head = payload[: payload.find(_SEP)]
    return None if head == _REVOKED else head


def revoked_key(payload: str) -> str:
    """The key a revocation notification names."""
    return payload.partition(_SEP)[2]


def decode(payload: str) -> tuple[str, list[KeptEvent]]:
    """(run id, its events); an event too large for the notification comes without its data."""
    head, _, rest = payload.partition(_SEP)
    first, _, rest = rest.partition(_SEP)
    seq = int(first)
    events = []
    for record in rest.split(_RS):
        name, _, data = record.partition(_SEP)
        events.append(KeptEvent(seq, name, None if data == _TOO_LARGE else EventData.of_json(data)))
        seq += 1
    return head, events
