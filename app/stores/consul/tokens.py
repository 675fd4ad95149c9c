"""Minted tokens' records in Consul's KV store, ``sc/tokens/<cluster>/<id>``, and a watch
that answers the whole map after every change (blocking queries on the prefix)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from app.stores.base import StoreUnavailable, tokens_prefix
from app.stores.consul.client import ClientSource, child_name, entry_value, kv_path, pace

#: A record is never rewritten, so a delete that loses its ``cas`` lost it to another
#: delete or a put of the same id; a few rounds settle it.
CAS_ATTEMPTS = 5


class ConsulTokens:
    """One cluster's token records under ``sc/tokens/<cluster>/``."""

    def __init__(self, client: ClientSource, cluster_id: str) -> None:
        self._client = client
        self.prefix = tokens_prefix(cluster_id)

    async def put(self, token_id: str, record: bytes) -> None:
        await self._client().request("PUT", kv_path(self.prefix + token_id), content=record)

    async def delete(self, token_id: str) -> bool:
        """Delete with ``cas`` on the index just read, so that "there was one" is exact."""
        path = kv_path(self.prefix + token_id)
        for _ in range(CAS_ATTEMPTS):
            found = await self._client().request("GET", path, expect=(200, 404))
            if found.status == 404:
                return False
            index = found.json()[0]["ModifyIndex"]
            deleted = await self._client().request("DELETE", path, params={"cas": index})
            if deleted.json() is True:
                return True
        raise StoreUnavailable(f"token {token_id!r} kept changing while deleting it")

    async def listing(self) -> tuple[dict[str, bytes], int]:
        entries, index = await self._client().list_prefix(self.prefix)
        return _records(entries, self.prefix), index

    async def watch(self) -> AsyncGenerator[dict[str, bytes], None]:
        """The records now and after every change. An index that goes backwards only
        restarts the blocking queries from 0: each answer is the full map anyway."""
        current, index = await self.listing()
        yield dict(current)
        while True:
            started = asyncio.get_running_loop().time()
            entries, new_index = await self._client().list_prefix(self.prefix, index=index)
            index = new_index if new_index >= index else 0
            records = _records(entries, self.prefix)
            if records != current:
                current = records
                yield dict(current)
            else:
                await pace(started)


def _records(entries: list[dict[str, Any]], prefix: str) -> dict[str, bytes]:
    records = {}
    for entry in entries:
        token_id = child_name(entry["Key"], prefix)
        if token_id is not None:
            records[token_id] = entry_value(entry)
    return records
