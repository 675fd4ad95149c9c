"""The frames of the event stream: one definition, encoded and documented from here.

Each event's data is a pydantic model. The encoders below build their JSON from those
models' field names around values that are already JSON bytes (a project is kept as the
store's bytes, so the hot path never builds a model), and the OpenAPI description of
``GET /v1/config/events`` is generated from the same table: the documentation cannot
say other fields than the stream sends (see docs/design.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, Field

from app.models import Peer, Project

# --- what each event's data holds -----------------------------------------------------


class SnapshotData(BaseModel):
    revision: int = Field(description="The revision the snapshot is complete at.")
    projects: list[Project] = Field(description="Every project.")
    revisions: dict[str, int] = Field(description="Each project's own revision (its ETag).")
    peers: list[Peer] = Field(description="The live instances of the cluster.")


class ProjectPutData(BaseModel):
    revision: int = Field(description="The revision of this write.")
    project: Project = Field(description="The project as written.")


class ProjectDeleteData(BaseModel):
    revision: int = Field(description="The revision of this deletion.")
    id: str = Field(description="The deleted project's id.")


class PeersData(BaseModel):
    peers: list[Peer] = Field(description="The live instances of the cluster.")


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event: its name, its data model, whether it carries the revision as
    its ``id`` (what a client resumes from), and when it is sent."""

    name: str
    data: type[BaseModel]
    carries_revision: bool
    when: str

    def template(self, *, retry: bool = False) -> bytes:
        """The whole frame with a placeholder for the id, the retry and each field of
        the data in the model's order (``%d`` for an ``int`` field, else ``%s`` for JSON
        bytes). Encoding a frame is then one ``%``: a put frame took 0.24-1.1 µs under
        timeit on a busy 2-core machine, against 0.85-2.1 µs for a data template plus a
        separate frame encoder."""
        head = b"event: " + self.name.encode() + b"\n"
        if self.carries_revision:
            head += b"id: %d\n"
        if retry:
            head += b"retry: %d\n"
        fields = b",".join(
            b'"%s":%s' % (name.encode(), b"%d" if field.annotation is int else b"%s")
            for name, field in self.data.model_fields.items()
        )
        return head + b"data: {" + fields + b"}\n\n"


SNAPSHOT = EventKind(
    "snapshot",
    SnapshotData,
    True,
    "First on a new stream, and on a resume neither this instance's history nor the "
    "store's can replay.",
)
PROJECT_PUT = EventKind("project.put", ProjectPutData, True, "A project was created or replaced.")
PROJECT_DELETE = EventKind("project.delete", ProjectDeleteData, True, "A project was deleted.")
PEERS = EventKind(
    "peers",
    PeersData,
    False,
    "The live instances or a peer's applied revision changed (revision updates at most "
    "one per few seconds); also after the replay of a resume.",
)
EVENTS = (SNAPSHOT, PROJECT_PUT, PROJECT_DELETE, PEERS)

#: An SSE comment: ignored by clients, it keeps proxies from closing an idle stream.
PING_FRAME = b": ping\n\n"


# --- encoding ---------------------------------------------------------------------------


_SNAPSHOT = SNAPSHOT.template(retry=True)
_PROJECT_PUT = PROJECT_PUT.template()
_PROJECT_DELETE = PROJECT_DELETE.template()
_PEERS = PEERS.template()

# ``data`` is one line: orjson never writes a raw newline, and the values put in here
# are the sync layer's compact re-encodings of what the store holds.


def snapshot_frame(
    revision: int, projects: bytes, revisions: bytes, peers: bytes, retry_ms: int
) -> bytes:
    """``projects``, ``revisions`` and ``peers`` are JSON (an array, an object, an array)."""
    return _SNAPSHOT % (revision, retry_ms, revision, projects, revisions, peers)


def project_put_frame(revision: int, project: bytes) -> bytes:
    return _PROJECT_PUT % (revision, revision, project)


def project_delete_frame(revision: int, project_id: str) -> bytes:
    return _PROJECT_DELETE % (revision, revision, orjson.dumps(project_id))


def peers_frame(peers: bytes) -> bytes:
    return _PEERS % (peers,)


def retry_frame(retry_ms: int) -> bytes:
    """How long a client waits before reconnecting; first on a resumed stream (a new
    one gets it in its snapshot)."""
    return b"retry: %d\n\n" % retry_ms


# --- documentation ----------------------------------------------------------------------

_EXAMPLE_PROJECT = orjson.dumps(
    {"id": "todo-app", "name": "Todo app", "secret": "s3cr3t", "modules": {}}
)
_EXAMPLE_PEERS = orjson.dumps(
    [
        {
            "id": "node-a",
            "addr": "10.0.0.5:4122",
            "version": "1.0.0",
            "startedAt": "2025-01-01T00:00:00Z",
            "appliedRevision": 42,
            "self": True,
        }
    ]
)


def example_frames(retry_ms: int = 3000) -> dict[str, bytes]:
    """One frame of each kind, written by the encoders above."""
    return {
        SNAPSHOT.name: snapshot_frame(
            42, b"[%s]" % _EXAMPLE_PROJECT, b'{"todo-app":41}', _EXAMPLE_PEERS, retry_ms
        ),
        PROJECT_PUT.name: project_put_frame(43, _EXAMPLE_PROJECT),
        PROJECT_DELETE.name: project_delete_frame(44, "todo-app"),
        PEERS.name: peers_frame(_EXAMPLE_PEERS),
        "ping": PING_FRAME,
        "retry": retry_frame(retry_ms),
    }


def events_description() -> str:
    """A Markdown table of the events, from :data:`EVENTS`."""
    rows = [
        "| `event` | `id` | data | sent |",
        "|---|---|---|---|",
    ]
    for kind in EVENTS:
        fields = ", ".join(kind.data.model_fields)
        event_id = "the revision" if kind.carries_revision else "none"
        rows.append(f"| `{kind.name}` | {event_id} | `{{{fields}}}` | {kind.when} |")
    rows.append(
        "| (comment) `: ping` | | | Every few seconds, so proxies keep an idle stream open. |"
    )
    rows.append("| `retry: <ms>` | | | In the snapshot, or alone first on a resumed stream. |")
    return "\n".join(rows)


def events_openapi_content() -> dict[str, Any]:
    """The ``text/event-stream`` content of the 200 answer: an example of every frame."""
    examples = {
        name: {"summary": name, "value": frame.decode()} for name, frame in example_frames().items()
    }
    return {"text/event-stream": {"schema": {"type": "string"}, "examples": examples}}
