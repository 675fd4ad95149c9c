"""Consul agents for the tests (fixtures: consul_server, consul_factory).

Every agent binds to 127.0.0.1 with each of its ports set to a free one (DNS and gRPC
off), keeps its files under pytest's tmp dirs and is stopped through its own PID.

* ``consul_server``: one single-server agent for the whole run that keeps its data across
  ``.stop()`` / ``.start()`` (``-server -bootstrap-expect=1 -data-dir``). Tests that stop
  or pause it must start / resume it again; isolate tests by cluster id.
* ``consul_factory(tls=True, acl=True)``: extra in-memory (``-dev``) agents for one test.
  ``tls``: HTTPS only, ``verify_incoming``; the server certificate names only
  ``server.dc1.consul`` and ``localhost`` (no IP), so clients must send
  ``CONSUL_TLS_SERVER_NAME``. ``acl``: ``default_policy = "deny"``, a master token and a
  client token allowed ``key_prefix "sc/"`` and ``session_prefix ""`` write.
  ``persistent=True`` makes a data-keeping server like ``consul_server``;
  ``unix_socket=True`` also serves HTTP on a unix socket (``agent.socket``);
  ``extra_config`` is appended to the agent's HCL (e.g. a ``limits`` block).
"""

from __future__ import annotations

import signal
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.stores.consul import ConsulConfig
from tests.eventually import eventually
from tests.servers.binaries import binary
from tests.servers.certificates import client_variables, self_signed, signed
from tests.servers.freeze import freeze
from tests.servers.process import ChildProcess, free_port, port_open

START_TIMEOUT = 30.0
SERVER_NAME = "server.dc1.consul"
CLIENT_POLICY = """
key_prefix "sc/" { policy = "write" }
session_prefix "" { policy = "write" }
"""


@dataclass
class ConsulCertificates:
    """A CA, a server certificate for ``server.dc1.consul`` / ``localhost`` and a client
    certificate, made with openssl."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> ConsulCertificates:
        directory.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = self_signed(directory, "ca", "consul-test-ca")
        server = signed(
            directory,
            "server",
            SERVER_NAME,
            ca_cert,
            ca_key,
            f"subjectAltName=DNS:{SERVER_NAME},DNS:localhost\n"
            "extendedKeyUsage=serverAuth,clientAuth\n",
        )
        client = signed(
            directory, "client", "space-cloud", ca_cert, ca_key, "extendedKeyUsage=clientAuth\n"
        )
        return cls(ca_cert, *server, *client)


class ConsulAgent:
    """One Consul agent (a single server) owned by the test run."""

    def __init__(
        self,
        base_dir: Path,
        *,
        tls: bool = False,
        acl: bool = False,
        persistent: bool = False,
        unix_socket: bool = False,
        extra_config: str = "",
    ) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.persistent = persistent
        # Short: a socket path is limited to ~100 bytes, more than pytest's tmp dirs allow.
        self.socket = Path(f"/tmp/consul-{uuid.uuid4().hex[:12]}.sock") if unix_socket else None
        self.extra_config = extra_config
        self.port = free_port()
        self.server_port, self.serf_lan_port, self.serf_wan_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        self.certs = ConsulCertificates.make(base_dir / "certs") if tls else None
        self.acl = acl
        self.master_token = str(uuid.uuid4()) if acl else None
        self.client_token = str(uuid.uuid4()) if acl else None
        self.process: ChildProcess | None = None
        self.config_file = base_dir / "agent.hcl"
        self.config_file.write_text(self._config())

    # --- what clients need --------------------------------------------------------

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.certs else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.addr}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def env(self) -> dict[str, str]:
        """The CONSUL_* variables a gateway process needs to reach this agent."""
        env = {"CONSUL_HTTP_ADDR": self.url if self.certs else self.addr}
        if self.certs:
            certs = self.certs
            env |= client_variables("CONSUL", certs.ca, certs.client_cert, certs.client_key)
            env |= {"CONSUL_TLS_SERVER_NAME": SERVER_NAME}
        if self.client_token:
            env["CONSUL_HTTP_TOKEN"] = self.client_token
        return env

    def config(self, **overrides: str) -> ConsulConfig:
        """The store config for this agent from :meth:`env` plus ``overrides``
        (``CONSUL_*`` names), whatever the test process's own environment holds."""
        return ConsulConfig.from_env({**self.env(), **overrides})

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> ConsulAgent:
        """Start the agent (same data dir) and wait until it is leader and takes writes."""
        if not self.running:
            self.process = ChildProcess(self._args(), self.base_dir / "consul.log").start()
        try:
            eventually(
                lambda: port_open(self.port) or not self.running,
                START_TIMEOUT,
                f"Consul's port {self.port}",
            )
            eventually(
                self._writable, START_TIMEOUT, f"Consul at {self.url} to take writes", interval=0.1
            )
        except BaseException as error:
            log = self.process.log()[-3000:] if self.process else ""
            self.stop()
            raise RuntimeError(f"Consul did not start ({error}); its log:\n{log}") from error
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.socket is not None:
            self.socket.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        if self.process is not None and self.process.running:
            freeze(self.process.pid)

    def resume(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGCONT)

    def _writable(self) -> bool:
        if not self.running:
            code = self.process.proc.poll() if self.process and self.process.proc else None
            raise RuntimeError(f"consul exited with {code}")
        try:
            answer = self.api("PUT", "/v1/kv/test/ready", content=b"1", timeout=2)
            return answer.text.strip() == "true"
        except httpx.HTTPError:
            return False

    def setup_acl(self) -> None:
        """A policy for ``sc/`` and sessions, and the client token that carries it."""
        policy = self.api(
            "PUT",
            "/v1/acl/policy",
            json={
                "Name": "space-cloud",
                "Rules": CLIENT_POLICY,
            },
        )
        policy.raise_for_status()
        token = self.api(
            "PUT",
            "/v1/acl/token",
            json={
                "Description": "space-cloud gateway",
                "SecretID": self.client_token,
                "Policies": [{"Name": "space-cloud"}],
            },
        )
        token.raise_for_status()

    # --- talking to it directly (with the master token) ---------------------------

    def api(
        self,
        method: str,
        path: str,
        token: str | None = None,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request to the agent, with the master token unless ``token`` is given."""
        headers = {}
        if token or self.master_token:
            headers["X-Consul-Token"] = token or self.master_token or ""
        extensions = {"sni_hostname": SERVER_NAME} if self.certs else {}
        with httpx.Client(verify=self._ssl_context(), timeout=timeout, trust_env=False) as client:
            return client.request(
                method, f"{self.url}{path}", headers=headers, extensions=extensions, **kwargs
            )

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if self.certs is None:
            return True
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        context.load_cert_chain(self.certs.client_cert, self.certs.client_key)
        return context

    # --- configuration ------------------------------------------------------------

    def _args(self) -> list[str]:
        args = [binary("consul"), "agent", f"-config-file={self.config_file}"]
        return args if self.persistent else [*args, "-dev"]

    def _config(self) -> str:
        http_port, https_port = (-1, self.port) if self.certs else (self.port, -1)
        lines = [
            f'node_name = "consul-{self.port}"',
            'datacenter = "dc1"',
            'bind_addr = "127.0.0.1"',
            'client_addr = "127.0.0.1"',
            "disable_update_check = true",
            'log_level = "info"',
            "performance { raft_multiplier = 1 }",
            f"ports {{ http = {http_port}, https = {https_port}, dns = -1, grpc = -1,"
            f" server = {self.server_port}, serf_lan = {self.serf_lan_port},"
            f" serf_wan = {self.serf_wan_port} }}",
        ]
        if self.persistent:
            lines += [
                "server = true",
                "bootstrap_expect = 1",
                f'data_dir = "{self.base_dir / "data"}"',
            ]
        if self.certs:
            lines += [
                f'ca_file = "{self.certs.ca}"',
                f'cert_file = "{self.certs.server_cert}"',
                f'key_file = "{self.certs.server_key}"',
                "verify_incoming = true",
                "verify_outgoing = true",
                "verify_server_hostname = true",
            ]
        if self.socket:
            # HTTP on the TCP port (readiness, the api() helper) and on the socket.
            proto = "https" if self.certs else "http"
            lines.append(f'addresses {{ {proto} = "127.0.0.1 unix://{self.socket}" }}')
        if self.acl:
            lines += [
                'primary_datacenter = "dc1"',
                f'acl {{ enabled = true, default_policy = "deny", down_policy = "extend-cache",'
                f' tokens {{ master = "{self.master_token}", agent = "{self.master_token}" }} }}',
            ]
        return "\n".join([*lines, self.extra_config]) + "\n"


def start_consul(base_dir: Path, **options: Any) -> ConsulAgent:
    """Start an agent (``options``: those of :class:`ConsulAgent`) and set up its ACLs."""
    agent = ConsulAgent(base_dir, **options).start()
    try:
        if agent.acl:
            agent.setup_acl()
    except BaseException:
        agent.stop()
        raise
    return agent


@pytest.fixture(scope="session")
def consul_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """One data-keeping Consul server for the whole run; isolate tests by cluster id."""
    agent = start_consul(tmp_path_factory.mktemp("consul"), persistent=True)
    yield agent
    agent.stop()


ConsulFactory = Callable[..., ConsulAgent]


@pytest.fixture
def consul_factory(tmp_path: Path) -> Iterator[ConsulFactory]:
    """Start extra Consul agents for one test; all stopped at teardown."""
    started: list[ConsulAgent] = []

    def factory(**options: Any) -> ConsulAgent:
        agent = start_consul(tmp_path / f"consul-{len(started)}", **options)
        started.append(agent)
        return agent

    yield factory
    for agent in started:
        agent.stop()
