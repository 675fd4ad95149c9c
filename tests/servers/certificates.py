"""Test certificates made with openssl: a CA, and certificates it signs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    """``name.crt`` and ``name.key``: a self-signed certificate (a CA) for ``cn``."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", *_new_key(key), "-out", cert, "-days", "2", "-subj", f"/CN={cn}")
    return cert, key


def signed(
    directory: Path, name: str, cn: str, ca_cert: Path, ca_key: Path, extensions: str
) -> tuple[Path, Path]:
    """``name.crt`` and ``name.key`` for ``cn``, signed by the CA, with ``extensions``
    (openssl's extension file syntax)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", *_new_key(key), "-out", csr, "-subj", f"/CN={cn}")
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return cert, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _new_key(key: Path) -> list[str | Path]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key]


def client_variables(prefix: str, ca: Path, cert: Path, key: Path) -> dict[str, str]:
    """The CA and client certificate as etcd's and Consul's tools read them
    (``ETCD_CACERT``, ``CONSUL_CLIENT_CERT``...)."""
    return {
        f"{prefix}_CACERT": str(ca),
        f"{prefix}_CLIENT_CERT": str(cert),
        f"{prefix}_CLIENT_KEY": str(key),
    }
