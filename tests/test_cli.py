"""``space-cloud run`` refuses bad flags and variables: exit 2, one line naming the culprit.

Every failing start runs in process (``cli.main`` with the environment and working
directory of the case); a few also run as real ``python -m app run`` subprocesses with a
clean environment, all of them at once, for what only the process shows.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI

from app import cli, run
from app.settings import Settings
from tests.environ import clean_environ, clear_gateway_environ
from tests.servers.process import free_port

ADMIN = {"ADMIN_PASS": "pw"}
DISTRIBUTED = {"ADMIN_PASS": "pw", "ADMIN_SECRET": "s3cret-0123456789-0123456789-abcdef"}
FOLLOW = ["--store-type", "follow"]


@dataclass
class Case:
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: Every one of these must be in the error line.
    names: tuple[str, ...] = ()
    dotenv: str | None = None
    #: None of these may be echoed (a secret that was refused).
    hidden: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    "unknown store type flag": Case(
        ["--store-type", "redis"],
        ADMIN,
        ("--store-type", "STORE_TYPE", "'redis'", "local", "etcd", "consul"),
    ),
    "unknown store type variable": Case(
        [],
        {**ADMIN, "STORE_TYPE": "zookeeper"},
        ("STORE_TYPE", "'zookeeper'", "local", "etcd", "consul"),
    ),
    "advertise addr without port": Case(
        ["--advertise-addr", "gw.example.com"], ADMIN, ("--advertise-addr", "gw.example.com")
    ),
    "advertise addr bad port": Case(
        ["--advertise-addr", "gw.example.com:99999"], ADMIN, ("--advertise-addr",)
    ),
    "advertise addr variable bad host": Case(
        [], {**ADMIN, "ADVERTISE_ADDR": "bad_host:80"}, ("ADVERTISE_ADDR", "bad_host")
    ),
    "unparsable DEV": Case([], {"DEV": "maybe"}, ("DEV", "'maybe'")),
    "unparsable DEV from .env": Case([], {}, ("DEV", "'perhaps'"), dotenv="DEV=perhaps\n"),
    "unparsable PORT": Case([], {**ADMIN, "PORT": "http"}, ("PORT", "'http'")),
    "unparsable ETCD_HTTP_SSL": Case(
        ["--store-type", "etcd"],
        {**DISTRIBUTED, "ETCD_HTTP_SSL": "maybe"},
        ("ETCD_HTTP_SSL", "'maybe'"),
    ),
    "unparsable CONSUL_HTTP_SSL_VERIFY": Case(
        ["--store-type", "consul"],
        {**DISTRIBUTED, "CONSUL_HTTP_SSL_VERIFY": "sometimes"},
        ("CONSUL_HTTP_SSL_VERIFY", "'sometimes'"),
    ),
    "missing ETCD_CACERT": Case(
        ["--store-type", "etcd"],
        {**DISTRIBUTED, "ETCD_CACERT": "/nonexistent/ca.pem"},
        ("ETCD_CACERT", "/nonexistent/ca.pem"),
    ),
    "ETCD endpoint without port": Case(
        [],
        {**DISTRIBUTED, "STORE_TYPE": "etcd", "ETCD_ENDPOINTS": "10.0.0.1:2379,10.0.0.2"},
        ("ETCD_ENDPOINTS", "10.0.0.2"),
    ),
    "CONSUL_HTTP_AUTH without colon": Case(
        ["--store-type", "consul"],
        {**DISTRIBUTED, "CONSUL_HTTP_AUTH": "onlyuser"},
        ("CONSUL_HTTP_AUTH",),
    ),
    "unknown flag": Case(["--no-such-flag"], ADMIN, ("--no-such-flag", "space-cloud run --help")),
    "advertise addr with a scheme": Case(
        ["--advertise-addr", "http://gw.example.com:4122"],
        ADMIN,
        ("--advertise-addr", "scheme is not allowed", "host:port"),
    ),
    "unknown LOG_FORMAT": Case([], {**ADMIN, "LOG_FORMAT": "xml"}, ("LOG_FORMAT", "'xml'")),
    "no admin password": Case([], {}, ("ADMIN_PASS", "--dev")),
    "distributed without secret": Case(["--store-type", "etcd"], ADMIN, ("ADMIN_SECRET",)),
    "short admin secret": Case([], {**ADMIN, "ADMIN_SECRET": "x"}, ("ADMIN_SECRET", "at least 32")),
    "admin secret of 31 bytes": Case(
        [],
        {**ADMIN, "ADMIN_SECRET": "short-secret-of-31-bytes-xxxxxx"},
        ("ADMIN_SECRET", "at least 32"),
        hidden=("short-secret-of-31-bytes-xxxxxx",),
    ),
    "bad CORS origin": Case(
        [], {**ADMIN, "CORS_ORIGINS": "https://ok.example,not-an-origin"}, ("CORS_ORIGINS",)
    ),
    "unparsable MAX_HEADER_BYTES": Case(
        [], {**ADMIN, "MAX_HEADER_BYTES": "lots"}, ("MAX_HEADER_BYTES",)
    ),
    "zero HEADER_TIMEOUT_SECONDS": Case(
        [], {**ADMIN, "HEADER_TIMEOUT_SECONDS": "0"}, ("HEADER_TIMEOUT_SECONDS",)
    ),
    "unparsable BODY_TIMEOUT_SECONDS": Case(
        [], {**ADMIN, "BODY_TIMEOUT_SECONDS": "never"}, ("BODY_TIMEOUT_SECONDS",)
    ),
    "negative KEEP_ALIVE_TIMEOUT_SECONDS": Case(
        [], {**ADMIN, "KEEP_ALIVE_TIMEOUT_SECONDS": "-1"}, ("KEEP_ALIVE_TIMEOUT_SECONDS",)
    ),
    "upstream scheme": Case(
        [*FOLLOW, "--upstream", "ftp://a:4122"],
        DISTRIBUTED,
        ("--upstream", "UPSTREAM", "ftp://a:4122"),
    ),
    "upstream without port": Case(
        [*FOLLOW, "--upstream", "http://a"], DISTRIBUTED, ("--upstream", "'http://a'")
    ),
    "upstream list item without port": Case(
        [*FOLLOW, "--upstream", "http://a:1,a:2"], DISTRIBUTED, ("--upstream", "'a:2'")
    ),
    "upstream bad port": Case(
        [*FOLLOW, "--upstream", "http://a:99999"], DISTRIBUTED, ("--upstream", "99999")
    ),
    "upstream with a path": Case(
        [*FOLLOW, "--upstream", "http://a:1/v1"], DISTRIBUTED, ("--upstream", "path")
    ),
    "follow without upstream": Case(
        FOLLOW, DISTRIBUTED, ("--store-type follow", "--upstream", "UPSTREAM")
    ),
    "upstream without follow": Case(
        [], {**DISTRIBUTED, "UPSTREAM": "http://a:4122"}, ("only for --store-type follow",)
    ),
}


#: Run as real ``python -m app run`` processes too: the exit status and the one line on
#: stderr hold for the process, not only for ``cli.main`` (a flag, a variable, a .env).
AS_PROCESS = ("unknown flag", "unparsable PORT", "unparsable DEV from .env")


@dataclass
class Outcome:
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def process_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Start the AS_PROCESS cases at once, then collect them."""
    running: dict[str, subprocess.Popen[str]] = {}
    try:
        for index, name in enumerate(AS_PROCESS):
            case = CASES[name]
            workdir = tmp_path_factory.mktemp(f"cli{index}")
            if case.dotenv is not None:
                (workdir / ".env").write_text(case.dotenv)
            # Should a case wrongly start a server, it binds only to loopback.
            env = {**clean_environ(), "HOST": "127.0.0.1", "PORT": str(free_port()), **case.env}
            running[name] = subprocess.Popen(
                [sys.executable, "-m", "app", "run", *case.args],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        results = {}
        for name, process in running.items():
            # A bound on a hang, not a timing: a loaded machine starts these slowly.
            _, stderr = process.communicate(timeout=120)
            results[name] = Outcome(process.returncode, stderr)
        return results
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def assert_one_line_naming(outcome: Outcome, name: str) -> None:
    assert outcome.returncode == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    assert line.startswith("space-cloud: error: ")
    for expected in CASES[name].names:
        assert expected in line, (expected, line)
    for secret in CASES[name].hidden:
        assert secret not in outcome.stderr, (secret, line)


@pytest.mark.parametrize("name", AS_PROCESS)
def test_bad_start_of_the_process_exits_2_with_one_line(
    process_outcomes: dict[str, Outcome], name: str
) -> None:
    assert_one_line_naming(process_outcomes[name], name)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_start_exits_2_with_one_line(
    captured_run: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    """Each case in process (``cli.main``): the same checks, without a process to start."""
    case = CASES[name]
    if case.dotenv is not None:
        (tmp_path / ".env").write_text(case.dotenv)
    for variable, value in {"HOST": "127.0.0.1", "PORT": str(free_port()), **case.env}.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", *case.args])
    assert "app" not in captured_run  # stopped before serving
    code = exited.value.code
    assert isinstance(code, int), code
    assert_one_line_naming(Outcome(code, capsys.readouterr().err), name)


# --- in process: flags reach the settings that uvicorn is started with -------------------


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    """Run ``main`` up to ``serve``, which is captured instead of serving."""
    clear_gateway_environ(monkeypatch)
    monkeypatch.setenv("GRPC_VERBOSITY", "NONE")  # main() sets it; undone after the test
    monkeypatch.chdir(tmp_path)
    captured: dict[str, object] = {}

    def fake_serve(app: object, settings: Settings) -> None:
        captured["app"] = app
        captured["host"], captured["port"] = settings.host, settings.port

    monkeypatch.setattr(run, "serve", fake_serve)
    monkeypatch.setattr(run.signal, "signal", lambda *_: None)  # keep pytest's handlers
    monkeypatch.setattr(run, "configure_logging", lambda *_: None)
    # The run path tunes this process's collector; the tests after this one keep theirs.
    monkeypatch.setattr(run.gc, "freeze", lambda: None)
    monkeypatch.setattr(run.gc, "set_threshold", lambda *_: None)
    return captured


def test_flags_beat_variables(
    captured_run: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CLUSTER_ID=from-dotenv\nPORT=1111\n")
    monkeypatch.setenv("PORT", "2222")
    monkeypatch.setenv("ADMIN_PASS", "pw")
    monkeypatch.setenv("NODE_ID", "env-node")
    cli.main(
        [
            "run",
            "--store-type",
            "none",
            "--port",
            "3333",
            "--host",
            "127.0.0.1",
            "--id",
            "flag-node",
            "--config",
            str(tmp_path / "c.yaml"),
        ]
    )
    assert captured_run["port"] == 3333
    assert captured_run["host"] == "127.0.0.1"
    settings = served_settings(captured_run)
    assert settings.store_type == "local"
    assert settings.node_id == "flag-node"
    assert settings.cluster_id == "from-dotenv"
    assert settings.admin_pass == "pw"
    assert settings.config == tmp_path / "c.yaml"


def served_settings(captured_run: dict[str, object]) -> Settings:
    """The settings of the app that was handed to ``uvicorn.run``."""
    app = captured_run["app"]
    assert isinstance(app, FastAPI)
    settings = app.state.settings
    assert isinstance(settings, Settings)
    return settings


def test_dev_flag_needs_no_password(captured_run: dict[str, object], tmp_path: Path) -> None:
    cli.main(["run", "--dev", "--config", str(tmp_path / "c.yaml")])
    assert served_settings(captured_run).dev is True


def test_locked_config_file_exits_2(
    captured_run: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from app.stores.local import LocalStore

    holder = LocalStore(tmp_path / "c.yaml")
    asyncio.run(holder.open())
    try:
        with pytest.raises(SystemExit) as caught:
            cli.main(["run", "--dev", "--config", str(tmp_path / "c.yaml")])
    finally:
        asyncio.run(holder.close())
    assert caught.value.code == 2
    assert "app" not in captured_run
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "in use" in lines[0]


def test_invalid_yaml_config_exits_2(
    captured_run: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.yaml").write_text("projects: [\n")
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--dev", "--config", str(tmp_path / "c.yaml")])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "not valid YAML" in lines[0]


def test_busy_port_exits_2_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app", "run", "--dev", "--host", "127.0.0.1"],
            cwd=tmp_path,
            env={**clean_environ(), "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        f"space-cloud: error: port {port} is already in use on 127.0.0.1 "
        "(choose another with --port)"
    ]
    assert not (tmp_path / "config.yaml").exists()  # stopped before the store was opened


def test_run_help_lists_the_variable_groups_and_where_env_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for group in (
        "ETCD_*",
        "CONSUL_*",
        "tuning",
        "LOG_FORMAT",
        "ETCD_ENDPOINTS",
        "CONSUL_HTTP_ADDR",
    ):
        assert group in text, group
    # Every variable without a flag is listed, new ones included.
    for name, spelled in cli.env_names().items():
        if " / " not in spelled:
            assert spelled in text, name
    assert ".env" in text and "working directory" in text


def test_env_example_names_every_variable_and_store_type() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"# {name.upper()}=" in example, name
    store_line = next(line for line in example.splitlines() if line.startswith("# Store:"))
    for store_type in ("local", "none", "etcd", "consul", "follow"):
        assert store_type in store_line, store_type


def test_a_client_command_loads_no_server_module() -> None:
    """The client commands start without FastAPI, uvicorn or pydantic (app/run.py is
    loaded for ``run`` only): most of a command's start was importing them."""
    server_modules = ("fastapi", "starlette", "uvicorn", "pydantic", "app.run", "app.settings")
    code = (
        "import sys; from app import cli; cli.build_parser().parse_args(['list']); "
        f"print(' '.join(m for m in {server_modules!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "", loaded.stdout
