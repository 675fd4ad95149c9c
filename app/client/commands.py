"""The client commands of ``space-cloud``: their flags and what each one prints.

Every command prints the API's JSON on stdout. An API error prints its one sentence on
stderr and exits 1; a usage error (argparse's, an unreadable file) exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

from app.client.api import DEFAULT_ADDR, ApiError, ClientError, GatewayClient
from app.client.watch import Watch

PROG = "space-cloud"
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

Handler = Callable[[GatewayClient, argparse.Namespace], Any]


class UsageError(Exception):
    """The command cannot be run as given (exit 2)."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add every client command to ``space-cloud``'s sub-command parsers."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--addr", help=f"SPACE_CLOUD_ADDR: the gateway's URL or host:port (default {DEFAULT_ADDR})"
    )
    connection.add_argument("--token", help="SPACE_CLOUD_TOKEN: a token from 'space-cloud login'")

    def command(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help, parents=[connection])
        parser.set_defaults(handler=handler)
        return parser

    login = command("login", "log in; prints only the token", _login)
    login.add_argument("--user", help="SPACE_CLOUD_USER (default admin)")
    command("list", "print every project", lambda client, _: client.list_projects())
    get = command("get", "print one project", lambda client, args: client.get_project(args.id))
    get.add_argument("id")
    put = command("put", "create or replace a project from a JSON file (- = stdin)", _put)
    put.add_argument("id")
    put.add_argument("file", help="a JSON file, or - for stdin")
    put.add_argument("--if-match", type=int, metavar="REV", help="only if at this revision")
    delete = command("delete", "delete a project", _delete)
    delete.add_argument("id")
    delete.add_argument("--if-match", type=int, metavar="REV", help="only if at this revision")
    command("peers", "print the live instances of the cluster", lambda client, _: client.peers())
    watch = command("watch", "print every event as one JSON line; resumes by itself", _watch)
    watch.add_argument(
        "--project", action="append", default=[], metavar="ID", help="only this project (repeat)"
    )
    watch.add_argument("--last-event-id", type=int, metavar="REV", help="resume after REV")
    history = command("history", "print a project's versions, or one version's document", _history)
    history.add_argument("id")
    history.add_argument("revision", nargs="?", type=int, help="print this version's document")
    history.add_argument("--limit", type=int, help="at most this many versions")
    history.add_argument("--before", type=int, metavar="REV", help="versions older than REV")
    rollback = command("rollback", "write an earlier version as a new revision", _rollback)
    rollback.add_argument("id")
    rollback.add_argument("revision", type=int)
    rollback.add_argument("--if-match", type=int, metavar="REV", help="only if at this revision")
    _add_token_commands(commands, connection)


def _add_token_commands(
    commands: argparse._SubParsersAction, connection: argparse.ArgumentParser
) -> None:
    tokens = commands.add_parser("tokens", help="create, list and revoke tokens (admin)")
    actions = tokens.add_subparsers(dest="action", required=True, parser_class=type(tokens))
    create = actions.add_parser("create", help="create a token", parents=[connection])
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["admin", "writer", "reader"])
    create.add_argument(
        "--project",
        action="append",
        required=True,
        metavar="PATTERN",
        help="a project id or a prefix ending in * (repeat)",
    )
    create.add_argument("--ttl", type=int, metavar="SECONDS", help="expires after this")
    create.set_defaults(handler=_create_token)
    listing = actions.add_parser("list", help="list tokens", parents=[connection])
    listing.set_defaults(handler=lambda client, _: client.list_tokens())
    revoke = actions.add_parser("revoke", help="revoke a token", parents=[connection])
    revoke.add_argument("id")
    revoke.set_defaults(handler=_revoke_token)


def run_command(args: argparse.Namespace, transport: httpx.BaseTransport | None = None) -> int:
    """Run a parsed client command; the exit code. ``transport``: for tests."""
    try:
        code = _run(args, transport)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # ``space-cloud list | head``: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace, transport: httpx.BaseTransport | None) -> int:
    addr = args.addr or os.environ.get("SPACE_CLOUD_ADDR") or DEFAULT_ADDR
    token = args.token or os.environ.get("SPACE_CLOUD_TOKEN") or None
    try:
        with GatewayClient(addr, token, transport=transport) as client:
            answer = args.handler(client, args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ApiError as exc:
        hint = ""
        if exc.status_code == 401 and not token and args.handler is not _login:
            hint = "; log in first: export SPACE_CLOUD_TOKEN=$(space-cloud login)"
        return _fail(f"{exc}{hint}", EXIT_API_ERROR)
    except ClientError as exc:
        return _fail(str(exc), EXIT_API_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if isinstance(answer, str):
        print(answer)
    elif answer is not None:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _login(client: GatewayClient, args: argparse.Namespace) -> str:
    user = args.user or os.environ.get("SPACE_CLOUD_USER") or "admin"
    password = os.environ.get("SPACE_CLOUD_PASS")
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {user}: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    return client.login(user, password)


def _put(client: GatewayClient, args: argparse.Namespace) -> dict:
    if args.file == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as file:
                body = file.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    return client.put_project(args.id, body, args.if_match)


def _delete(client: GatewayClient, args: argparse.Namespace) -> dict:
    return client.delete_project(args.id, args.if_match)


def _history(client: GatewayClient, args: argparse.Namespace) -> dict:
    if args.revision is not None:
        return client.version(args.id, args.revision)
    return client.history(args.id, args.limit, args.before)


def _rollback(client: GatewayClient, args: argparse.Namespace) -> dict:
    return client.rollback(args.id, args.revision, args.if_match)


def _create_token(client: GatewayClient, args: argparse.Namespace) -> dict:
    return client.create_token(args.name, args.role, args.project, args.ttl)


def _revoke_token(client: GatewayClient, args: argparse.Namespace) -> None:
    client.revoke_token(args.id)


def _watch(client: GatewayClient, args: argparse.Namespace) -> None:
    def report(reason: str) -> None:
        print(f"{PROG}: watch: {reason}; reconnecting", file=sys.stderr, flush=True)

    password = os.environ.get("SPACE_CLOUD_PASS")
    user = os.environ.get("SPACE_CLOUD_USER") or "admin"
    watch = Watch(
        client,
        frozenset(args.project),
        args.last_event_id,
        on_break=report,
        # A stream ends with its token; with the password at hand, carry on.
        log_in_again=(lambda: client.login(user, password)) if password else None,
    )
    for line in watch.lines():
        print(line, flush=True)
