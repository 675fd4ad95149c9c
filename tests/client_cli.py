"""``space-cloud`` client commands run by the tests, in this process or as processes."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from unittest import mock

from app import cli
from tests.environ import clean_environ
from tests.gateway import Gateway, space_cloud_command


def client_env(gateway: Gateway, **extra: str) -> dict[str, str]:
    return {**clean_environ(), "SPACE_CLOUD_ADDR": gateway.addr, **extra}


def space_cloud(
    gateway: Gateway, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``space-cloud ARGS`` in this process (``cli.main``: the console script's entry),
    with its own environment, stdin, stdout and stderr; the exit status as a process's."""
    out, err = io.StringIO(), io.StringIO()
    stdin_stream = io.TextIOWrapper(io.BytesIO((stdin or "").encode()))
    with (
        mock.patch.dict(os.environ, client_env(gateway, **env), clear=True),
        mock.patch.object(sys, "stdin", stdin_stream),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else int(exited.code is not None)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def space_cloud_process(
    gateway: Gateway, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``space-cloud ARGS`` as the installed console script, a process of its own."""
    return subprocess.run(
        [*space_cloud_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=client_env(gateway, **env),
        timeout=30,
    )
