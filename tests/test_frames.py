"""The event frames have one definition: what the stream sends is what OpenAPI documents."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from app.main import create_app
from app.metrics import Metrics
from app.settings import Settings
from app.stores.base import ProjectChange, ProjectListing, StoredProject
from app.stores.local import LocalStore
from app.sync import ClusterState, frames
from tests.environ import clear_gateway_environ


def parse_frame(frame: bytes) -> dict[str, str]:
    """One SSE frame -> its fields (``data`` joined), failing on anything unexpected."""
    assert frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1, frame
    fields: dict[str, str] = {}
    for line in frame.decode().removesuffix("\n\n").split("\n"):
        name, separator, value = line.partition(": ")
        assert separator and name in ("event", "id", "retry", "data"), line
        assert name not in fields, f"{name} twice in {frame!r}"
        fields[name] = value
    return fields


def check_against_its_model(frame: bytes) -> tuple[frames.EventKind, BaseModel]:
    fields = parse_frame(frame)
    [kind] = [kind for kind in frames.EVENTS if kind.name == fields["event"]]
    data = orjson.loads(fields["data"])
    assert list(data) == list(kind.data.model_fields), "the fields, in the model's order"
    model = kind.data.model_validate(data)
    if kind.carries_revision:
        assert int(fields["id"]) == data["revision"]
    else:
        assert "id" not in fields
    return kind, model


def test_every_example_frame_matches_its_model() -> None:
    examples = frames.example_frames(retry_ms=1234)
    assert set(examples) == {kind.name for kind in frames.EVENTS} | {"ping", "retry"}
    for kind in frames.EVENTS:
        assert check_against_its_model(examples[kind.name])[0] is kind
    assert parse_frame(examples["snapshot"])["retry"] == "1234"
    assert examples["ping"] == frames.PING_FRAME and frames.PING_FRAME.startswith(b":")
    assert examples["retry"] == b"retry: 1234\n\n"


def test_the_frames_the_applied_state_sends_match_their_models() -> None:
    state = ClusterState("n1", Metrics())
    document = {"id": "shop", "name": "Shop", "secret": "", "modules": {"db": {"on": True}}}
    value = orjson.dumps(document)
    state.apply_listing(ProjectListing({"shop": StoredProject("shop", value, 3)}, 4))
    record = {"id": "n1", "addr": "127.0.0.1:1", "version": "1", "startedAt": "t"}
    state.set_peers({"n1": orjson.dumps(record | {"appliedRevision": 4})})
    subscription, _ = state.subscribe(4)
    state.apply_changes([ProjectChange("put", "cart", 5, b'{"id":"cart"}')])
    state.apply_changes([ProjectChange("delete", "shop", 6)])

    _, snapshot = check_against_its_model(state.snapshot_frame())
    assert isinstance(snapshot, frames.SnapshotData)
    assert snapshot.revision == 6 and snapshot.revisions == {"cart": 5}
    assert [peer.self for peer in snapshot.peers] == [True]
    sent = [frame for _, frame in subscription._frames]
    assert [check_against_its_model(frame)[0] for frame in sent] == [
        frames.PROJECT_PUT,
        frames.PROJECT_DELETE,
    ]
    assert check_against_its_model(state.peers_frame())[0] is frames.PEERS


@pytest.fixture
def openapi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)  # no .env from the repository
    clear_gateway_environ(monkeypatch)
    settings = Settings(_env_file=None, admin_pass="x", node_id="n1")
    app = create_app(settings, LocalStore(tmp_path / "c.yaml"))
    return app.openapi()


def test_the_openapi_description_of_the_stream_is_built_from_the_frames(openapi: dict) -> None:
    operation = openapi["paths"]["/v1/config/events"]["get"]
    for kind in frames.EVENTS:
        fields = ", ".join(kind.data.model_fields)
        assert f"| `{kind.name}` |" in operation["description"]
        assert f"`{{{fields}}}`" in operation["description"]
    assert "revisions" in operation["description"]  # the snapshot's per-project ETags
    content = operation["responses"]["200"]["content"]["text/event-stream"]
    documented = {name: example["value"] for name, example in content["examples"].items()}
    assert documented == {name: f.decode() for name, f in frames.example_frames().items()}
    json.dumps(openapi)  # serialisable as served


def test_the_event_models_live_only_beside_their_encoders() -> None:
    from app import models

    for kind in frames.EVENTS:
        assert not hasattr(models, kind.data.__name__)
    assert not any(name.endswith("Event") for name in vars(models))
