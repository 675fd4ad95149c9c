"""The SSL context for https to Consul, from the TLS files of a :class:`ConsulConfig`.

``CONSUL_CAPATH`` is read the way Consul's own tools read it (go-rootcerts'
``LoadCAPath``): every file under the directory, recursively, each one PEM, rather than
OpenSSL's hashed-name lookup, so a plain folder of CA files works.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.stores.base import StoreConfigError
from app.stores.consul.config import ConsulConfig


def ssl_context(config: ConsulConfig) -> ssl.SSLContext:
    """The context every https connection uses; raises StoreConfigError for bad files."""
    if config.verify:
        context = _verifying_context(config)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.client_cert is not None:
        _load(
            context.load_cert_chain,
            "CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY",
            config.client_cert,
            config.client_key,
        )
    return context


def _verifying_context(config: ConsulConfig) -> ssl.SSLContext:
    """Trusting the CA file, else the CA directory, else the system's CAs."""
    if config.cacert is not None:
        return _load(ssl.create_default_context, "CONSUL_CACERT", cafile=config.cacert)
    if config.capath is not None:
        return ssl.create_default_context(cadata=_ca_path_pem(config.capath))
    return ssl.create_default_context()


def _ca_path_pem(folder: Path) -> str:
    """Every file under ``folder``, each checked to hold PEM certificates, joined."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    if not files:
        raise StoreConfigError(f"CONSUL_CAPATH: {str(folder)!r} holds no CA certificate file")
    texts = []
    for path in files:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreConfigError(f"CONSUL_CAPATH: cannot read {str(path)!r} ({exc})") from exc
        _load(ssl.create_default_context, f"CONSUL_CAPATH ({path})", cadata=text)
        texts.append(text)
    return "\n".join(texts)


def _load(function: Callable[..., Any], variable: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise StoreConfigError(f"{variable}: cannot load the certificate ({exc})") from exc
