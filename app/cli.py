"""``space-cloud run``: flags -> Settings -> a start-up check of the store -> uvicorn.

Bad flags, variables or store credentials end the start with one line on stderr and
exit code 2; nothing else parses the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from app import __version__
from app.server import ServerConfigError, serve
from app.settings import (
    STORE_TYPE_ALIASES,
    STORE_TYPES,
    ConsulSettings,
    EtcdSettings,
    Settings,
    env_names,
)
from app.stores.base import Store, StoreConfigError, StoreUnavailable
from app.stores.factory import build_store

EXIT_USAGE = 2
PROG = "space-cloud"

log = logging.getLogger("space_cloud")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")


class RedactTokens(logging.Filter):
    """Keeps ``?token=`` (the event stream's query token) out of the access log."""

    _TOKEN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


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
    return parser


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


def load_settings(overrides: dict[str, object]) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as error:
        fail(describe(error, env_names()))


def load_store_settings(settings: Settings) -> EtcdSettings | ConsulSettings | None:
    kinds: dict[str, tuple[type[BaseSettings], str]] = {
        "etcd": (EtcdSettings, "ETCD_"),
        "consul": (ConsulSettings, "CONSUL_"),
    }
    if settings.store_type not in kinds:
        return None
    model, prefix = kinds[settings.store_type]
    try:
        return model()  # type: ignore[return-value]
    except ValidationError as error:
        names = {field: prefix + field.upper() for field in model.model_fields}
        fail(describe(error, names))


async def check_store(store: Store) -> None:
    """Open, check and close a throwaway store: bad credentials stop the start here."""
    try:
        await store.open()
        await store.check()
    finally:
        await store.close()


def run(overrides: dict[str, object]) -> None:
    settings = load_settings(overrides)
    if problem := settings.auth_problem():
        fail(problem)
    store_settings = load_store_settings(settings)
    etcd = store_settings if isinstance(store_settings, EtcdSettings) else None
    consul = store_settings if isinstance(store_settings, ConsulSettings) else None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Consul request
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    try:
        asyncio.run(check_store(build_store(settings, etcd, consul)))
    except StoreConfigError as error:
        fail(str(error))
    except StoreUnavailable as error:
        log.warning(
            "the %s store is not reachable yet (%s); retrying in the background",
            settings.store_type,
            error,
        )

    from app.main import create_app

    app = create_app(settings, build_store(settings, etcd, consul))
    # uvicorn re-raises the signal that stopped it once it has shut down cleanly; these
    # handlers turn that into a plain exit instead of a death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(128 + signal.SIGINT))
    try:
        serve(app, settings)
    except ServerConfigError as error:
        fail(str(error))


def main(argv: list[str] | None = None) -> None:
    # gRPC's C core writes its own lines to stderr (TLS failures among them); the etcd
    # store reports every failure itself, in one line. GRPC_VERBOSITY=debug brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args = build_parser().parse_args(argv)
    if args.command == "run":
        overrides = {key: value for key, value in vars(args).items() if key != "command"}
        run(overrides)


if __name__ == "__main__":
    main()
