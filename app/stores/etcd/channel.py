"""One gRPC channel per etcd member, with keepalive and the TLS files of the config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from app.stores.base import StoreVariableError
from app.stores.etcd.config import EtcdConfig

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # etcd answers pings more often than every 5 s (--grpc-keepalive-min-time) with
    # GOAWAY, and pings without a call count as abuse, hence 6 s and calls only.
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", 5000),
    # A member that comes back is used again within ~2 s, not after minutes of back-off.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", -1),
]


@dataclass
class Member:
    """One configured endpoint and its own channel."""

    address: str
    channel: grpc.aio.Channel
    kv: rpc.KVStub
    watch: rpc.WatchStub
    lease: rpc.LeaseStub
    auth: rpc.AuthStub

    @classmethod
    def open(cls, host: str, port: int, credentials: grpc.ChannelCredentials | None) -> Member:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if credentials is None:
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        return cls(
            target,
            channel,
            rpc.KVStub(channel),
            rpc.WatchStub(channel),
            rpc.LeaseStub(channel),
            rpc.AuthStub(channel),
        )


def channel_credentials(config: EtcdConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials from the config's files; None without TLS."""
    if not config.tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(config.cacert, "ETCD_CACERT"),
        private_key=_read(config.client_key, "ETCD_CLIENT_KEY"),
        certificate_chain=_read(config.client_cert, "ETCD_CLIENT_CERT"),
    )


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise StoreVariableError.invalid(
            variable, str(path), error.strerror or str(error)
        ) from None
