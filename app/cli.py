"""``space-cloud run``: flags -> Settings -> a start-up check of the store -> uvicorn.
The client commands (``login``, ``list``, ``watch``, ...) are dispatched to
:mod:`app.client.commands`.

Bad flags, variables or store credentials end the start with one line on stderr and
exit code 2; nothing else parses the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sys
import textwrap
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from app import __version__, tracing
from app.client.commands import add_commands, run_command
from app.logs import configure_logging
from app.server import ServerConfigError, serve
from app.settings import STORE_TYPE_ALIASES, STORE_TYPES, Settings, read_environment
from app.stores.base import StoreConfigError, StoreUnavailable
from app.stores.factory import build_store

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.sync import ChangeSource

EXIT_USAGE = 2
PROG = "space-cloud"

log = logging.getLogger("space_cloud")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")


#: Variables of their own tools, read only with their store type.
STORE_VARIABLES = {
    "ETCD_*": "with --store-type etcd: ETCD_ENDPOINTS, ETCD_USER, ETCD_PASSWORD, "
    "ETCD_HTTP_SSL, ETCD_CACERT, ETCD_CLIENT_CERT, ETCD_CLIENT_KEY",
    "CONSUL_*": "with --store-type consul: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, "
    "CONSUL_HTTP_AUTH, CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, "
    "CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY",
}


def run_epilog() -> str:
    """``run --help``'s variable groups; the settings without a flag are read from the
    settings model, so a new one is listed without anyone remembering to."""
    unflagged = [name for name in env_names().values() if " / " not in name]
    logs = [name for name in unflagged if name.startswith(("LOG_", "ACCESS_LOG"))]
    tuning = [name for name in unflagged if name not in logs]
    groups = {**STORE_VARIABLES, "logs": ", ".join(logs), "tuning": ", ".join(tuning)}
    lines = ["Variables besides the flags' own (.env.example lists them all, with comments):"]
    for group, names in groups.items():
        wrapped = textwrap.wrap(names, 76)
        lines.append(f"  {group:<10} {wrapped[0]}")
        lines.extend(f"  {'':<10} {line}" for line in wrapped[1:])
    lines += [
        "A flag wins over a variable, a variable over the file .env, which is read from the",
        "working directory (where space-cloud is started), and that over the default.",
    ]
    return "\n".join(lines) + "\n"


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A config gateway whose instances form one cluster.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway. Every flag also has an environment variable.",
        epilog=run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    valid = ", ".join([*STORE_TYPES, *STORE_TYPE_ALIASES])
    run.add_argument("--store-type", help=f"STORE_TYPE: {valid} (default local)")
    run.add_argument("--advertise-addr", help="ADVERTISE_ADDR: host:port others reach this on")
    run.add_argument("--port", help="PORT: HTTP port (default 4122)")
    run.add_argument("--host", help="HOST: bind address (default 0.0.0.0)")
    run.add_argument("--id", dest="node_id", help="NODE_ID: this instance's id")
    run.add_argument("--cluster", dest="cluster_id", help="CLUSTER_ID (default default-cluster)")
    run.add_argument("--config", help="CONFIG: the local store's file (default config.yaml)")
    run.add_argument("--admin-user", help="ADMIN_USER (default admin)")
    run.add_argument("--admin-pass", help="ADMIN_PASS: the admin password")
    run.add_argument("--admin-secret", help="ADMIN_SECRET: signs tokens; same on every instance")
    run.add_argument("--dev", action="store_true", help="DEV: no auth at all (never in production)")
    run.add_argument(
        "--upstream",
        action="append",
        metavar="URL",
        help="UPSTREAM: with --store-type follow, the http(s)://host:port of an instance to "
        "follow; repeat it (or separate by commas) for failover",
    )
    run.add_argument(
        "--upstream-token",
        help="UPSTREAM_TOKEN: a token for the upstream (default: signed with ADMIN_SECRET)",
    )
    run.add_argument(
        "--cache-file",
        help="CACHE_FILE: keep the last applied configs here and serve them when the "
        "store is unreachable at start (default: none)",
    )
    add_commands(commands)
    return parser


def env_names() -> dict[str, str]:
    """Map each Settings field to ``FLAG / VARIABLE`` for error messages (flag names
    live here, beside the parser, and nowhere else)."""
    flags = {
        "store_type": "--store-type",
        "advertise_addr": "--advertise-addr",
        "port": "--port",
        "host": "--host",
        "node_id": "--id",
        "cluster_id": "--cluster",
        "config": "--config",
        "admin_user": "--admin-user",
        "admin_pass": "--admin-pass",
        "admin_secret": "--admin-secret",
        "dev": "--dev",
        "upstream": "--upstream",
        "upstream_token": "--upstream-token",
        "cache_file": "--cache-file",
    }
    names = {}
    for field in Settings.model_fields:
        variable = field.upper()
        names[field] = f"{flags[field]} / {variable}" if field in flags else variable
    return names


def describe(error: ValidationError, names: dict[str, str]) -> str:
    """One line for the first problem, naming the flag / variable and what is valid."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = names.get(field, field.upper())
    given = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    if field == "store_type":
        valid = ", ".join(STORE_TYPES)
        return f"invalid {name} {given!r}: valid values are {valid} (alias none = local)"
    if first["type"] == "bool_parsing":
        return f"invalid {name} {given!r}: use true/false, 1/0, yes/no or on/off"
    if not field:
        return message
    return f"invalid {name} {given!r}: {message}" if given is not None else f"{name}: {message}"


def load_settings(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as error:
        fail(describe(error, env_names()))


async def check_store(store: ChangeSource) -> None:
    """Open, check and close a throwaway store (or follower): bad credentials stop the
    start here."""
    try:
        await store.open()
        await store.check()
    finally:
        await store.close()


def run(overrides: dict[str, object]) -> None:
    settings = load_settings(overrides)
    if problem := settings.auth_problem():
        fail(problem)
    env = read_environment()
    configure_logging(settings.log_format, settings.log_level)
    check_port_free(settings.host, settings.port)
    tracer_provider = tracer_provider_from_env(settings.node_id)
    follows = settings.store_type == "follow"  # no store: another instance's stream
    try:
        if follows:
            from app.main import build_follower

            asyncio.run(check_store(build_follower(settings)))
        else:
            asyncio.run(check_store(build_store(settings, env)))
    except StoreConfigError as error:  # a bad ETCD_* / CONSUL_* variable among them
        fail(str(error))
    except StoreUnavailable as error:
        log.warning(
            "the %s store is not reachable yet (%s); retrying in the background",
            settings.store_type,
            error,
        )

    from app.main import create_app

    store = None if follows else build_store(settings, env)
    app = create_app(settings, store, tracer_provider)
    # Start-up objects live as long as the process: keep them out of GC scans. With
    # thousands of open streams the default thresholds make full collections often
    # enough to show in fan-out latency (bench/fanout.py: p99 at 10k streams halved).
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    # uvicorn re-raises the signal that stopped it once it has shut down cleanly; these
    # handlers turn that into a plain exit instead of a death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(128 + signal.SIGINT))
    try:
        serve(app, settings)
    except ServerConfigError as error:
        fail(str(error))


def tracer_provider_from_env(node_id: str) -> TracerProvider | None:
    """Tracing when the OTEL_* variables ask for it (the [otel] extra), else None."""
    if not tracing.requested(os.environ):
        return None
    try:
        return tracing.provider_from_env(os.environ, node_id)
    except tracing.TracingUnavailable as error:
        fail(str(error))


def check_port_free(host: str, port: int) -> None:
    """A busy port stops the start here, in one line, before the store is touched."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(f"port {port} is already in use on {host} (choose another with --port)")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")


def main(argv: list[str] | None = None) -> None:
    # gRPC's C core writes its own lines to stderr (TLS failures among them); the etcd
    # store reports every failure itself, in one line. GRPC_VERBOSITY=debug brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        fail(f"unrecognized arguments: {' '.join(unknown)} (see '{PROG} {args.command} --help')")
    if args.command != "run":
        raise SystemExit(run_command(args))
    overrides = {key: value for key, value in vars(args).items() if key != "command"}
    run(overrides)


if __name__ == "__main__":
    main()
