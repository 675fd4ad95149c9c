"""The command line of ``space-cloud``: ``run`` goes on to :mod:`app.run` (flags ->
Settings -> a start-up check of the store -> uvicorn); the client commands (``login``,
``list``, ``watch``, ...) to :mod:`app.client.commands`. Neither loads the other's
modules: a client command starts without pydantic, FastAPI or uvicorn.

Bad flags, variables or store credentials end the start with one line on stderr and
exit code 2; nothing else parses the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from typing import NoReturn

from app import __version__
from app.client.commands import add_commands, run_command
from app.store_types import STORE_TYPE_ALIASES, STORE_TYPES

EXIT_USAGE = 2
PROG = "space-cloud"


class _Parser(argparse.ArgumentParser):
    #: Builds the epilog when the help is shown: ``run``'s lists the settings, whose
    #: model no other command loads.
    epilog_from: Callable[[], str] | None = None

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")

    def format_help(self) -> str:
        if self.epilog_from is not None:
            self.epilog = self.epilog_from()
        return super().format_help()


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    run.epilog_from = run_epilog
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
    from app.settings import Settings  # pydantic: only for run and its help

    names = {}
    for field in Settings.model_fields:
        variable = field.upper()
        names[field] = f"{flags[field]} / {variable}" if field in flags else variable
    return names


def main(argv: list[str] | None = None) -> None:
    # gRPC's C core writes its own lines to stderr (TLS failures among them); the etcd
    # store reports every failure itself, in one line. GRPC_VERBOSITY=debug brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        fail(f"unrecognized arguments: {' '.join(unknown)} (see '{PROG} {args.command} --help')")
    if args.command != "run":
        raise SystemExit(run_command(args))
    from app.run import run  # FastAPI, uvicorn and the stores: only for run

    overrides = {key: value for key, value in vars(args).items() if key != "command"}
    run(overrides)


if __name__ == "__main__":
    main()
