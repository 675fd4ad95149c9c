"""Gateways connecting the way operators connect them: TLS, credentials, several members.

Every case runs real ``space-cloud run`` processes against a real etcd or Consul that the
test starts; a setting that can never work must stop the start with one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway import Gateway


def gateway(tmp_path: Path, kind: str, env: dict[str, str], name: str = "a") -> Gateway:
    return Gateway(tmp_path / name, node_id=name, args=["--store-type", kind], env=env)


def refused_start(tmp_path: Path, kind: str, env: dict[str, str]) -> str:
    """Start a gateway that must refuse to start; its one line of output."""
    gw = gateway(tmp_path, kind, env, name=f"refused-{len(list(tmp_path.iterdir()))}")
    gw.start(wait_ready=False)
    assert gw.process.proc is not None
    assert gw.process.proc.wait(60) == 2, gw.process.log()
    lines = [line for line in gw.process.log().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("space-cloud: error: ")
    return lines[0]


def test_etcd_cluster_keeps_taking_writes_when_the_member_in_use_dies(
    etcd_factory, tmp_path: Path
) -> None:
    etcd = etcd_factory(members=3)
    gw = gateway(tmp_path, "etcd", etcd.env()).start()
    try:
        assert gw.put("before").status_code == 201
        etcd.kill(0)  # the first endpoint listed is the one in use
        codes = [gw.put(f"after-{number}").status_code for number in range(10)]
        assert codes == [201] * 10
        listing = gw.get("/v1/config/projects").json()
        assert len(listing["projects"]) == 11
    finally:
        gw.stop()


def test_etcd_with_tls_client_certificates(etcd_factory, tmp_path: Path) -> None:
    etcd = etcd_factory(tls=True)
    gw = gateway(tmp_path, "etcd", etcd.env()).start()
    try:
        assert gw.put("secure").status_code == 201
        assert gw.peers()[0]["id"] == "a"
    finally:
        gw.stop()
    missing = refused_start(tmp_path, "etcd", {**etcd.env(), "ETCD_CLIENT_CERT": "/nope.pem"})
    assert "ETCD_CLIENT_CERT" in missing
    other_ca = str(etcd.certs.other_ca)
    wrong_ca = refused_start(tmp_path, "etcd", {**etcd.env(), "ETCD_CACERT": other_ca})
    assert "etcd" in wrong_ca.lower()


def test_etcd_with_user_and_password(etcd_factory, tmp_path: Path) -> None:
    etcd = etcd_factory(auth=True)
    gw = gateway(tmp_path, "etcd", etcd.env()).start()
    try:
        assert gw.put("authed").status_code == 201
    finally:
        gw.stop()
    wrong = refused_start(tmp_path, "etcd", {**etcd.env(), "ETCD_PASSWORD": "wrong"})
    assert "authentication failed" in wrong


def test_consul_with_tls_and_acl_tokens(consul_factory, tmp_path: Path) -> None:
    consul = consul_factory(tls=True, acl=True)
    env = consul.env()
    assert {
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "CONSUL_HTTP_TOKEN",
    } <= set(env)
    assert env["CONSUL_HTTP_ADDR"].startswith("https://")
    gw = gateway(tmp_path, "consul", env).start()
    try:
        assert gw.put("secure").status_code == 201
        assert gw.peers()[0]["id"] == "a"
    finally:
        gw.stop()
    wrong_name = refused_start(
        tmp_path, "consul", {**env, "CONSUL_TLS_SERVER_NAME": "evil.example"}
    )
    assert "certificate" in wrong_name.lower()
    no_token = {key: value for key, value in env.items() if key != "CONSUL_HTTP_TOKEN"}
    assert "CONSUL_HTTP_TOKEN" in refused_start(tmp_path, "consul", no_token)


@pytest.mark.parametrize("variable", ["ETCD_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
def test_unparsable_store_booleans_stop_the_start(variable: str, tmp_path: Path) -> None:
    kind = variable.split("_")[0].lower()
    line = refused_start(tmp_path, kind, {variable: "maybe"})
    assert variable in line
