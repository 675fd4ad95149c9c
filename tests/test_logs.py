"""Logs as an operator reads them: ``LOG_FORMAT=json`` lines parsed one by one, tokens
never in a line however the query parameter is spelled, peers joining and leaving, and a
store outage in three lines at most (real gateways; the outage on a real etcd)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.logs import REDACTED, JsonFormatter, RepeatedLines, redact
from app.sync.operator_log import OutageLog
from tests import web
from tests.eventually import eventually
from tests.gateway import Gateway
from tests.servers.etcd import EtcdFactory

TOKEN_SPELLINGS = ["token", "%74oken", "TOKEN", "t%6Fken", "Token"]


def json_lines(text: str) -> list[dict]:
    """Every line of the log as a JSON object (fails on any line that is not one)."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        lines.append(record)
    return lines


def test_json_logs_one_object_per_line_without_tokens(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, env={"LOG_FORMAT": "json", "ACCESS_LOG": "true"}).start()
    token = gateway.token()
    try:
        gateway.put("logged")
        with web.client(base_url=gateway.url, timeout=5) as client:
            for spelling in TOKEN_SPELLINGS:
                with client.stream("GET", f"/v1/config/events?{spelling}={token}&x=1") as stream:
                    assert stream.status_code in (200, 401)
            client.get("/v1/config/projects", headers={"Authorization": f"Bearer {token}"})
            client.get("/no/such/page")
    finally:
        assert gateway.stop() == 0
    text = gateway.process.log()
    records = json_lines(text)
    assert token not in text
    assert token.rsplit(".", 1)[1] not in text  # not even the signature
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "uvicorn.access", "space_cloud"} <= loggers, loggers

    access = [r for r in records if r["logger"] == "uvicorn.access"]
    events = [r for r in access if r["path"].startswith("/v1/config/events")]
    assert len(events) == len(TOKEN_SPELLINGS)
    for record, spelling in zip(events, TOKEN_SPELLINGS, strict=True):
        assert record["path"] == f"/v1/config/events?{spelling}=[redacted]&x=1"
        assert record["method"] == "GET"
    assert any(r["path"] == "/no/such/page" and r["status"] == 404 for r in access)

    messages = [r["message"] for r in records]
    addr = gateway.addr
    assert any(f"listening on {addr}, advertised as {addr}" in m for m in messages), messages
    assert f"peer {gateway.node_id} joined at {addr}" in messages


def test_redact_catches_every_spelling_and_bare_tokens() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
    for spelling in [*TOKEN_SPELLINGS, "access_token", "%54%4F%4B%45%4E"]:
        line = f'"GET /v1/config/events?lastEventId=3&{spelling}=abc.def HTTP/1.1" 200'
        assert "abc.def" not in redact(line), spelling
        assert "lastEventId=3" in redact(line)
    assert jwt not in redact(f"upstream refused {jwt}")
    assert "s3cret" not in redact("Authorization: Bearer s3cret")
    minted = "sct_0123456789abcdef.bVPyDKtuHBrEzhHnx_1u6gtGhTu_T8oWdgTNjPOBQd8"
    assert redact(f"refused {minted}, retrying") == f"refused {REDACTED}, retrying"
    assert redact("/v1/config/projects?tokenish=1") == "/v1/config/projects?tokenish=1"


def test_repeated_lines_are_counted_not_printed(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    repeated = RepeatedLines(window=30, clock=clock)

    def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("app.stores.etcd", level, __file__, 1, message, None, None)

    passed = []
    for second in range(65):
        clock.now = 1000.0 + second
        renewal = record("could not renew the instance lease, retrying: refused")
        if repeated.filter(renewal):
            passed.append((second, renewal.getMessage()))
        assert repeated.filter(record(f"distinct {second}"))
    line = "could not renew the instance lease, retrying: refused"
    summary = f"{line} (and 29 times more in the last 30s)"
    assert passed == [(0, line), (30, summary), (60, summary)]
    assert repeated.filter(record("boom", logging.ERROR)) and repeated.filter(
        record("boom", logging.ERROR)
    )


def test_json_formatter_keeps_the_exception_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        record.exc_info = __import__("sys").exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed here" and "ValueError: boom" in parsed["exception"]


# --- store outages ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_logs_its_start_a_summary_every_30_s_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    outage = OutageLog(logging.getLogger("test.outage"), clock=clock)
    outage.update(None)  # the store answers: nothing to say
    for _ in range(40):  # 40 s of retries, one a second
        outage.update("etcd at 127.0.0.1:2379 failed: connection refused")
        clock.now += 1
    outage.update(None)
    outage.update(None)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "store unavailable: etcd at 127.0.0.1:2379 failed: connection refused",
        "store still unavailable after 30s (31 failed attempts): "
        "etcd at 127.0.0.1:2379 failed: connection refused",
        "store reachable again after 40s (40 failed attempts)",
    ]


def test_peers_and_an_etcd_outage_in_the_log(etcd_factory: EtcdFactory, tmp_path: Path) -> None:
    etcd = etcd_factory()
    cluster = f"logs{uuid.uuid4().hex[:8]}"

    def gateway(name: str) -> Gateway:
        return Gateway(
            tmp_path / name,
            node_id=name,
            args=["--store-type", "etcd", "--cluster", cluster],
            env={**etcd.env(), "INSTANCE_TTL_SECONDS": "3", "STORE_TIMEOUT_SECONDS": "1"},
        ).start()

    a = gateway("a")
    b = gateway("b")
    try:
        eventually(lambda: "peer b joined" in a.process.log(), 10, "a to log b's join")
        assert b.stop() == 0
        eventually(lambda: "peer b left" in a.process.log(), 10, "a to log b's leave")

        etcd.stop()
        eventually(lambda: a.get("/readyz").status_code == 503, 15, "a to notice the outage")
        time.sleep(8)  # time passes: 8 s of retries once logged ~25 lines, now one
        readyz = a.get("/readyz").json()["error"]
        etcd.start()
        eventually(lambda: a.get("/readyz").status_code == 200, 30, "a to be ready again")
        eventually(lambda: "store reachable again" in a.process.log(), 10, "the end of the outage")
    finally:
        a.stop()
        b.stop()
    for name in ("StoreUnavailable", "Error:", "Exception", "Timeout:"):
        assert name not in readyz, readyz
    lines = a.process.log().splitlines()
    outage = lines[next(i for i, line in enumerate(lines) if "store unavailable" in line) :]
    outage = outage[: next(i for i, line in enumerate(outage) if "reachable again" in line) + 1]
    # The sync layer's start and end, and each retry loop's complaint once (the etcd
    # lease's, the watches'), instead of a line per retry: 25 in 8 s before.
    assert len(outage) <= 5, "\n".join(outage)
    assert sum("store unavailable" in line for line in outage) == 1, "\n".join(outage)


def test_follower_failures_are_described_without_class_names() -> None:
    from app.follow.upstream import describe

    assert describe(httpx.ReadTimeout("")) == "no answer in time"
    assert describe(httpx.ConnectError("")) == "cannot connect"
    assert describe(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "[Errno 111] Connection refused"
    )
    assert describe(httpx.RemoteProtocolError("")) == "the connection failed"
