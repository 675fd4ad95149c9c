"""The Consul store: projects and token records in the KV store, instances held by
sessions.

The key layout and revisions are described in docs/design.md §3; the parts live in
:mod:`app.stores.consul.projects`, :mod:`app.stores.consul.instances` and
:mod:`app.stores.consul.tokens`, over one :class:`ConsulClient` opened with the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from app.stores.base import (
    CONSUL_VALUE_LIMIT,
    DEFAULT_PROJECT_VERSIONS,
    ProjectChange,
    ProjectListing,
    PutResult,
    StoreError,
    Version,
    VersionCounts,
    VersionStamp,
    projects_prefix,
)
from app.stores.consul.client import ConsulClient, kv_path
from app.stores.consul.config import ConsulConfig
from app.stores.consul.instances import ConsulInstances
from app.stores.consul.projects import ConsulProjects
from app.stores.consul.tokens import ConsulTokens
from app.stores.consul.watch import VERIFY_SECONDS


class ConsulStore:
    """:class:`app.stores.base.Store` over Consul's HTTP API."""

    kind = "consul"
    value_limit = CONSUL_VALUE_LIMIT

    def __init__(
        self,
        config: ConsulConfig,
        cluster_id: str,
        *,
        instance_ttl: int = 10,
        timeout: float = 5.0,
        watch_wait: float = 10.0,
        keep_versions: int = DEFAULT_PROJECT_VERSIONS,
        verify_seconds: float = VERIFY_SECONDS,
    ) -> None:
        self.config = config
        self.cluster_id = cluster_id
        self.timeout = timeout
        self.watch_wait = watch_wait
        self._client: ConsulClient | None = None
        self._projects = ConsulProjects(
            self._open_client, cluster_id, keep_versions, verify_seconds
        )
        self._instances = ConsulInstances(self._open_client, cluster_id, instance_ttl, watch_wait)
        self._tokens = ConsulTokens(self._open_client, cluster_id)

    @property
    def instance_ttl(self) -> int:
        """The session TTL in use (Consul's minimum is 10 s)."""
        return self._instances.ttl

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = ConsulClient(self.config, self.timeout, self.watch_wait)

    async def close(self) -> None:
        if self._instances.registered:
            with contextlib.suppress(StoreError):
                await self.deregister()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def check(self) -> None:
        """Read the projects prefix's own key: Consul checks ``key_prefix`` read on it
        (a recursive list would only filter out what the token may not see)."""
        prefix = projects_prefix(self.cluster_id)
        await self.client.request("GET", kv_path(prefix), expect=(200, 404))

    async def current_revision(self) -> int:
        """Consul's KV index now: a one-key read answers the KV table's highest index,
        which no ModifyIndex under the prefix can pass."""
        return await self._projects.current_revision()

    @property
    def client(self) -> ConsulClient:
        return self._open_client()

    def _open_client(self) -> ConsulClient:
        if self._client is None:
            raise StoreError("the Consul store is not open")
        return self._client

    # --- projects -----------------------------------------------------------------

    async def list_projects(self) -> ProjectListing:
        return await self._projects.listing()

    async def put_project(
        self,
        project_id: str,
        value: bytes,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> PutResult:
        stamp = stamp or VersionStamp.unattributed()
        return await self._projects.put(project_id, value, expected_revision, stamp)

    async def delete_project(
        self,
        project_id: str,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> int:
        stamp = stamp or VersionStamp.unattributed()
        return await self._projects.delete(project_id, expected_revision, stamp)

    def watch_projects(self, since: ProjectListing) -> AsyncGenerator[list[ProjectChange], None]:
        return self._projects.watch(since)

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """From the change log (docs/design.md §3): None when the log no longer holds the
        range, or it may hold a change by another client, which the log does not carry."""
        return await self._projects.changes_between(after, through)

    # --- versions -----------------------------------------------------------------

    @property
    def version_counts(self) -> VersionCounts:
        return self._projects.version_counts

    async def list_versions(
        self, project_id: str, *, limit: int, before: int | None = None
    ) -> list[Version]:
        return await self._projects.history.newest_first(project_id, limit, before)

    async def get_version(self, project_id: str, revision: int) -> Version | None:
        return await self._projects.history.at_revision(project_id, revision)

    # --- instances ----------------------------------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        await self._instances.register(node_id, record)

    async def update_registration(self, record: bytes) -> None:
        await self._instances.update(record)

    async def deregister(self) -> None:
        await self._instances.deregister()

    def watch_instances(self) -> AsyncGenerator[dict[str, bytes], None]:
        return self._instances.watch()

    # --- minted tokens ----------------------------------------------------------------

    async def put_token(self, token_id: str, record: bytes) -> None:
        await self._tokens.put(token_id, record)

    async def delete_token(self, token_id: str) -> bool:
        return await self._tokens.delete(token_id)

    async def list_tokens(self) -> dict[str, bytes]:
        records, _ = await self._tokens.listing()
        return records

    def watch_tokens(self) -> AsyncGenerator[dict[str, bytes], None]:
        return self._tokens.watch()
