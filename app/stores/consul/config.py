"""How to reach Consul: the ``CONSUL_*`` variables, read as Consul's own tools read them.

* ``CONSUL_HTTP_ADDR``: ``host:port``, ``http(s)://host:port`` or ``unix:///path/to.sock``
  (default ``127.0.0.1:8500``); an explicit ``http``/``https`` wins over
  ``CONSUL_HTTP_SSL``, which otherwise picks https;
* ``CONSUL_HTTP_TOKEN``, or ``CONSUL_HTTP_TOKEN_FILE`` (a file holding the token, which
  wins when both are set, as in Consul's client); ``CONSUL_HTTP_AUTH`` (``user:pass``);
* ``CONSUL_CACERT`` (a CA file) or ``CONSUL_CAPATH`` (a directory of PEM CA files, read
  whole and recursively; the file wins when both are set), ``CONSUL_CLIENT_CERT`` /
  ``CONSUL_CLIENT_KEY``, ``CONSUL_TLS_SERVER_NAME``, ``CONSUL_HTTP_SSL_VERIFY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.stores.base import StoreVariableError
from app.stores.variables import Variables

#: Every variable :meth:`ConsulConfig.from_env` reads.
CONSUL_VARIABLES = (
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_AUTH",
    "CONSUL_HTTP_SSL",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
    "CONSUL_HTTP_SSL_VERIFY",
)
DEFAULT_ADDR = "127.0.0.1:8500"
#: Tokens are short (a UUID); a larger file is not a token file.
MAX_TOKEN_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    """Where the agent listens, how to authenticate, and how to check its certificate."""

    #: ``host:port`` of the agent; ``localhost`` (the Host header) over a unix socket.
    address: str = DEFAULT_ADDR
    scheme: str = "http"
    #: The agent's unix socket (``CONSUL_HTTP_ADDR=unix:///path``).
    unix_socket: str | None = None
    token: str | None = field(default=None, repr=False)
    #: Where the token came from, for messages about a refused token.
    token_variable: str = "CONSUL_HTTP_TOKEN"
    auth: tuple[str, str] | None = field(default=None, repr=False)
    cacert: Path | None = None
    capath: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    tls_server_name: str | None = None
    verify: bool = True

    @property
    def base_url(self) -> str:
        """The URL requests are made to."""
        return f"{self.scheme}://{self.address}"

    @property
    def location(self) -> str:
        """Where the agent is, as messages name it."""
        return f"unix://{self.unix_socket}" if self.unix_socket else self.base_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsulConfig:
        """Read ``CONSUL_*``; raise :class:`StoreVariableError` naming a bad one."""
        variables = Variables(env)
        ssl = variables.flag("CONSUL_HTTP_SSL")
        scheme, address, unix_socket = _address(variables, "https" if ssl else "http")
        token, token_variable = _token(variables)
        variables.both_or_neither("CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY")
        return cls(
            address=address,
            scheme=scheme,
            unix_socket=unix_socket,
            token=token,
            token_variable=token_variable,
            auth=_basic_auth(variables),
            cacert=variables.file("CONSUL_CACERT"),
            capath=variables.folder("CONSUL_CAPATH"),
            client_cert=variables.file("CONSUL_CLIENT_CERT"),
            client_key=variables.file("CONSUL_CLIENT_KEY"),
            tls_server_name=variables.text("CONSUL_TLS_SERVER_NAME"),
            verify=variables.flag("CONSUL_HTTP_SSL_VERIFY") is not False,
        )


def _address(variables: Variables, default_scheme: str) -> tuple[str, str, str | None]:
    """``(scheme, host:port, socket path)`` from ``CONSUL_HTTP_ADDR``."""
    name = "CONSUL_HTTP_ADDR"
    text = variables.env.get(name, DEFAULT_ADDR)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = default_scheme, text
    if scheme == "unix":
        if not rest:
            raise StoreVariableError.invalid(name, text, "write unix:///path/to/consul.sock")
        return default_scheme, "localhost", rest
    if scheme not in ("http", "https"):
        raise StoreVariableError.invalid(name, text, f"use http, https or unix, not {scheme!r}")
    address = rest.rstrip("/")
    variables.host_port(name, address)
    return scheme, address, None


def _token(variables: Variables) -> tuple[str | None, str]:
    name = "CONSUL_HTTP_TOKEN_FILE"
    path = variables.text(name)
    if path is None:
        token = variables.text("CONSUL_HTTP_TOKEN")
        if token is not None and not token.strip().isprintable():
            # Not echoed: it is a secret. It travels in a header, which must be one line.
            raise StoreVariableError("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN: use one line of text")
        return token and token.strip(), "CONSUL_HTTP_TOKEN"
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        raise StoreVariableError.invalid(name, path, error.strerror or str(error)) from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise StoreVariableError.invalid(name, path, "the file is too large to hold a token")
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise StoreVariableError.invalid(name, path, "the file is not UTF-8 text") from None
    if not token or any(not char.isprintable() for char in token):
        raise StoreVariableError.invalid(name, path, "the file holds no token (one line of text)")
    return token, name


def _basic_auth(variables: Variables) -> tuple[str, str] | None:
    value = variables.text("CONSUL_HTTP_AUTH")
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep:
        # Not echoed: it may be a password.
        raise StoreVariableError("CONSUL_HTTP_AUTH", "CONSUL_HTTP_AUTH: write it as user:password")
    return user, password
