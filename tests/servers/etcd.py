"""etcd servers for the tests (fixtures: etcd_server, etcd_factory).

Every server binds to 127.0.0.1 on free ports, keeps its data under pytest's tmp_path
and is stopped through its own PID. ``etcd_factory(members=3)`` starts a cluster,
``tls=True`` serves HTTPS with client-certificate auth (certificates made with openssl),
``auth=True`` enables etcd's user/password auth with a 2 s token TTL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.stores.etcd import EtcdConfig
from tests.eventually import eventually
from tests.servers.binaries import binary
from tests.servers.certificates import client_variables, self_signed, signed
from tests.servers.freeze import freeze
from tests.servers.process import ChildProcess, free_port, port_open

ROOT_PASSWORD = "root-secret"
USER = "gateway"
PASSWORD = "gateway-secret"
AUTH_TOKEN_TTL = 2
START_TIMEOUT = 30.0


@dataclass
class Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these: "wrong CA" tests

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = self_signed(directory, "ca", "etcd-test-ca")
        other_ca, _ = self_signed(directory, "other-ca", "some-other-ca")
        server_cert, server_key = signed(
            directory,
            "server",
            "etcd",
            ca_cert,
            ca_key,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        client_cert, client_key = signed(
            directory, "client", USER, ca_cert, ca_key, "extendedKeyUsage=clientAuth\n"
        )
        return cls(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: ChildProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running


@dataclass
class EtcdServer:
    """One etcd member or a cluster of them, owned by the test run."""

    base_dir: Path
    members: list[EtcdMember]
    certs: Certificates | None = None
    auth: bool = False
    token: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")

    @classmethod
    def create(
        cls, base_dir: Path, members: int = 1, tls: bool = False, auth: bool = False
    ) -> EtcdServer:
        base_dir.mkdir(parents=True, exist_ok=True)
        certs = Certificates.make(base_dir / "certs") if tls else None
        nodes = [
            EtcdMember(f"m{i}", free_port(), free_port(), base_dir / f"m{i}.etcd")
            for i in range(members)
        ]
        return cls(base_dir, nodes, certs, auth)

    # --- what clients need --------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.certs else "http"

    @property
    def endpoints(self) -> str:
        return ",".join(member.endpoint for member in self.members)

    @property
    def running(self) -> bool:
        """Every member's process is alive (it may still be paused)."""
        return all(member.running for member in self.members)

    @property
    def pid(self) -> int:
        process = self.members[0].process
        assert process is not None
        return process.pid

    def env(self) -> dict[str, str]:
        """The ETCD_* variables a gateway process needs to reach this server."""
        env = {"ETCD_ENDPOINTS": self.endpoints}
        if self.certs:
            certs = self.certs
            env |= {"ETCD_HTTP_SSL": "true"}
            env |= client_variables("ETCD", certs.ca, certs.client_cert, certs.client_key)
        if self.auth:
            env |= {"ETCD_USER": USER, "ETCD_PASSWORD": PASSWORD}
        return env

    def config(self, **overrides: str) -> EtcdConfig:
        """The store config for this server from :meth:`env` plus ``overrides``
        (``ETCD_*`` names), whatever the test process's own environment holds."""
        return EtcdConfig.from_env({**self.env(), **overrides})

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> EtcdServer:
        """Start every member that is not running (same data dirs) and wait for health."""
        for member in self.members:
            if not member.running:
                member.process = ChildProcess(
                    self._args(member), self.base_dir / f"{member.name}.log"
                ).start()
        eventually(self._ports_open, START_TIMEOUT, f"etcd ports {self.endpoints}")
        eventually(
            self.healthy, START_TIMEOUT, f"etcd {self.endpoints} to be healthy", interval=0.1
        )
        return self

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None:
                member.process.stop()

    def kill(self, index: int | None = None) -> None:
        """SIGKILL one member (``index``) or all of them."""
        for member in self._chosen(index):
            if member.process is not None:
                member.process.kill()

    def pause(self, index: int | None = None) -> None:
        for member in self._chosen(index):
            if member.process is not None and member.process.running:
                freeze(member.process.pid)

    def resume(self, index: int | None = None) -> None:
        for member in self._chosen(index):
            if member.process is not None:
                member.process.signal(signal.SIGCONT)

    def _chosen(self, index: int | None) -> list[EtcdMember]:
        return self.members if index is None else [self.members[index]]

    def _ports_open(self) -> bool:
        return all(port_open(m.client_port) for m in self.members if m.running)

    def _args(self, member: EtcdMember) -> list[str]:
        client_url = f"{self.scheme}://{member.endpoint}"
        peer_url = f"http://127.0.0.1:{member.peer_port}"
        cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        args = [
            binary("etcd"),
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
            # Only matters once auth is enabled: a short TTL exercises re-authentication.
            "--auth-token-ttl",
            str(AUTH_TOKEN_TTL),
        ]
        if self.certs:
            args += [
                "--cert-file",
                str(self.certs.server_cert),
                "--key-file",
                str(self.certs.server_key),
                "--trusted-ca-file",
                str(self.certs.ca),
                "--client-cert-auth",
            ]
        return args

    # --- etcdctl ------------------------------------------------------------------

    def etcdctl(self, *args: str, user: str | None = None, timeout: float = 10.0) -> str:
        """Run etcdctl against the running members; return its stdout."""
        endpoints = ",".join(f"{self.scheme}://{m.endpoint}" for m in self.members if m.running)
        command = [binary("etcdctl"), f"--endpoints={endpoints}", "--command-timeout=5s"]
        if self.certs:
            command += [
                f"--cacert={self.certs.ca}",
                f"--cert={self.certs.client_cert}",
                f"--key={self.certs.client_key}",
            ]
        if user:
            command.append(f"--user={user}")
        result = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    @property
    def _admin(self) -> str | None:
        return f"root:{ROOT_PASSWORD}" if self.auth else None

    def healthy(self) -> bool:
        try:
            self.etcdctl("endpoint", "health", user=self._admin, timeout=5)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def revision(self) -> int:
        out = self.etcdctl("get", "sc/", "--limit=1", "--keys-only", "-w", "json", user=self._admin)
        return int(json.loads(out)["header"]["revision"])

    def leader(self) -> int:
        """The index in ``members`` of the current raft leader."""
        statuses = json.loads(self.etcdctl("endpoint", "status", "-w", "json", user=self._admin))
        leader_ids = {status["Status"]["leader"] for status in statuses}
        for index, member in enumerate(self.members):
            for status in statuses:
                ours = status["Endpoint"].endswith(member.endpoint)
                if ours and status["Status"]["header"]["member_id"] in leader_ids:
                    return index
        raise RuntimeError(f"no leader among {self.endpoints}")

    def compact(self) -> int:
        """Compact the history up to the current revision; returns that revision."""
        revision = self.revision()
        self.etcdctl("compact", str(revision), user=self._admin)
        return revision

    def enable_auth(self) -> None:
        """A root user, a user limited to ``sc/`` with a password, then ``auth enable``."""
        steps = [
            ["user", "add", "root", f"--new-user-password={ROOT_PASSWORD}", "--interactive=false"],
            ["user", "grant-role", "root", "root"],
            ["user", "add", USER, f"--new-user-password={PASSWORD}", "--interactive=false"],
            ["role", "add", USER],
            ["role", "grant-permission", USER, "--prefix=true", "readwrite", "sc/"],
            ["user", "grant-role", USER, USER],
            ["auth", "enable"],
        ]
        for step in steps:
            self.etcdctl(*step)


def start_etcd(
    base_dir: Path, members: int = 1, tls: bool = False, auth: bool = False
) -> EtcdServer:
    server = EtcdServer.create(base_dir, members=members, tls=tls, auth=False)
    try:
        server.start()
        if auth:
            server.enable_auth()
            server.auth = True
    except BaseException as error:
        server.stop()
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(base_dir.glob("*.log")))
        raise RuntimeError(f"etcd did not start ({error}); its log:\n{logs}") from error
    return server


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One single-member etcd for the whole run; isolate tests by cluster id."""
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


EtcdFactory = Callable[..., EtcdServer]


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[EtcdFactory]:
    """Start extra etcd servers or clusters for one test; all stopped at teardown."""
    started: list[EtcdServer] = []

    def factory(members: int = 1, tls: bool = False, auth: bool = False) -> EtcdServer:
        server = start_etcd(tmp_path / f"etcd-{len(started)}", members, tls, auth)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
