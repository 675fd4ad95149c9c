"""The embedded store: one instance, projects in a YAML file (``--config``).

The file keeps Space Cloud's shape, ``projects: [...]``, beside our own ``revision``
counter, each project's revision, the minted tokens' records (``tokens: {id: ...}``) and
the projects' versions (``history``, keyed by project id, oldest first). Every write
replaces the whole file atomically (temp file, fsync, rename, fsync of the folder), so a
``kill -9`` at any moment leaves either the old or the new file, a write and its version
are one replace, and a write is acknowledged only once it is durable. A lock file keeps a
second process off the same config.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections import deque
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import yaml

from app.stores.atomic import write_atomically
from app.stores.base import (
    ABSENT,
    DEFAULT_PROJECT_VERSIONS,
    ETCD_VALUE_LIMIT,
    NotRegistered,
    ProjectChange,
    ProjectListing,
    ProjectNotFound,
    PutResult,
    RevisionMismatch,
    StoreConfigError,
    StoredProject,
    ValueTooLarge,
    Version,
    VersionCounts,
    VersionStamp,
    WatchReset,
)
from app.stores.local_history import History, dump_history, parse_history

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: How many recent changes a watch that fell behind can still catch up from.
CHANGE_LOG_SIZE = 4096

_HEADER = b"# Written by space-cloud. Edit only while it is stopped.\n"


class LocalStore:
    kind = "local"

    def __init__(
        self,
        path: Path,
        *,
        value_limit: int = ETCD_VALUE_LIMIT,
        keep_versions: int = DEFAULT_PROJECT_VERSIONS,
    ) -> None:
        self.path = path
        self.value_limit = value_limit
        self.keep_versions = keep_versions
        self.version_counts = VersionCounts()
        self._lock_file: IO[bytes] | None = None
        self._projects: dict[str, StoredProject] = {}
        self._history: History = {}
        self._revision = 0
        self._write_lock = asyncio.Lock()
        self._changes: deque[ProjectChange] = deque(maxlen=CHANGE_LOG_SIZE)
        self._changed = asyncio.Condition()
        self._instances: dict[str, bytes] = {}
        self._node_id: str | None = None
        self._instances_changed = asyncio.Condition()
        self._tokens: dict[str, bytes] = {}
        self._tokens_changed = asyncio.Condition()

    # --- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._lock_file is None:
            self._lock_file = _acquire_lock(self.path)
        try:
            self._projects, self._revision, self._tokens, self._history = _load(self.path)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    async def check(self) -> None:
        """The file is readable and ours: :meth:`open` already proved both."""

    async def current_revision(self) -> int:
        return self._revision

    # --- projects -----------------------------------------------------------------

    async def list_projects(self) -> ProjectListing:
        return ProjectListing(projects=dict(self._projects), revision=self._revision)

    async def put_project(
        self,
        project_id: str,
        value: bytes,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> PutResult:
        if len(value) > self.value_limit:
            raise ValueTooLarge(len(value), self.value_limit)
        stamp = stamp or VersionStamp.unattributed()
        # Shielded: a cancelled caller must not leave the file ahead of memory.
        return await asyncio.shield(self._put(project_id, value, expected_revision, stamp))

    async def delete_project(
        self,
        project_id: str,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> int:
        stamp = stamp or VersionStamp.unattributed()
        return await asyncio.shield(self._delete(project_id, expected_revision, stamp))

    async def _put(
        self, project_id: str, value: bytes, expected_revision: int | None, stamp: VersionStamp
    ) -> PutResult:
        async with self._write_lock:
            current = self._projects.get(project_id)
            _check_expected(project_id, current, expected_revision)
            revision = self._revision + 1
            projects = dict(self._projects)
            projects[project_id] = StoredProject(project_id, value, revision)
            history = self._with_version(project_id, revision, "put", stamp, value)
            await self._persist(projects, revision, history)
            await self._record(ProjectChange("put", project_id, revision, value))
            return PutResult(revision=revision, created=current is None)

    async def _delete(
        self, project_id: str, expected_revision: int | None, stamp: VersionStamp
    ) -> int:
        async with self._write_lock:
            current = self._projects.get(project_id)
            if current is None:
                raise ProjectNotFound(project_id)
            _check_expected(project_id, current, expected_revision)
            revision = self._revision + 1
            projects = dict(self._projects)
            del projects[project_id]
            history = self._with_version(project_id, revision, "delete", stamp, None)
            await self._persist(projects, revision, history)
            await self._record(ProjectChange("delete", project_id, revision))
            return revision

    # --- versions -----------------------------------------------------------------

    def _with_version(
        self,
        project_id: str,
        revision: int,
        op: Literal["put", "delete"],
        stamp: VersionStamp,
        value: bytes | None,
    ) -> History:
        """The history with this write's version added and the oldest beyond
        ``keep_versions`` dropped (a write holds the lock: no writer races it here)."""
        version = Version(project_id, revision, op, stamp.at, stamp.by, stamp.node, value)
        versions = [*self._history.get(project_id, []), version]
        return {**self._history, project_id: versions[-self.keep_versions :]}

    async def list_versions(
        self, project_id: str, *, limit: int, before: int | None = None
    ) -> list[Version]:
        newest_first = reversed(self._history.get(project_id, []))
        older = [v for v in newest_first if before is None or v.revision < before]
        return older[:limit]

    async def get_version(self, project_id: str, revision: int) -> Version | None:
        versions = self._history.get(project_id, [])
        return next((v for v in versions if v.revision == revision), None)

    async def watch_projects(
        self, since: ProjectListing
    ) -> AsyncGenerator[list[ProjectChange], None]:
        last = since.revision
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(self._changed_after, last))
                if self._changes and self._changes[0].revision > last + 1:
                    raise WatchReset(f"the watch fell behind revision {last}")
                batch = [change for change in self._changes if change.revision > last]
            last = batch[-1].revision
            yield batch

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """None: the file keeps no log of changes (its versions are only the newest per
        project, and a hand edit leaves none), so a resume from before a restart gets a
        snapshot."""
        return None

    def _changed_after(self, revision: int) -> bool:
        return bool(self._changes) and self._changes[-1].revision > revision

    async def _persist(
        self, projects: dict[str, StoredProject], revision: int, history: History
    ) -> None:
        document = _dump(projects, revision, self._tokens, history)
        await asyncio.to_thread(write_atomically, self.path, document)
        written = sum(map(len, history.values())) - sum(map(len, self._history.values()))
        self.version_counts.written += 1
        self.version_counts.pruned += 1 - written
        self._projects = projects
        self._revision = revision
        self._history = history

    async def _record(self, change: ProjectChange) -> None:
        async with self._changed:
            self._changes.append(change)
            self._changed.notify_all()

    # --- instances: this one alone --------------------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        self._node_id = node_id
        await self._set_instances({node_id: record})

    async def update_registration(self, record: bytes) -> None:
        if self._node_id is None:
            raise NotRegistered
        await self._set_instances({self._node_id: record})

    async def deregister(self) -> None:
        self._node_id = None
        await self._set_instances({})

    async def watch_instances(self) -> AsyncGenerator[dict[str, bytes], None]:
        seen: dict[str, bytes] | None = None
        while True:
            async with self._instances_changed:
                await self._instances_changed.wait_for(partial(self._instances_replaced, seen))
                seen = self._instances
            yield dict(seen)

    def _instances_replaced(self, seen: dict[str, bytes] | None) -> bool:
        return self._instances is not seen

    async def _set_instances(self, instances: dict[str, bytes]) -> None:
        async with self._instances_changed:
            self._instances = instances
            self._instances_changed.notify_all()

    # --- minted tokens: in the same file, with the same atomic writes -------------------

    async def put_token(self, token_id: str, record: bytes) -> None:
        await asyncio.shield(self._set_token(token_id, record))

    async def delete_token(self, token_id: str) -> bool:
        return await asyncio.shield(self._set_token(token_id, None))

    async def list_tokens(self) -> dict[str, bytes]:
        return dict(self._tokens)

    async def watch_tokens(self) -> AsyncGenerator[dict[str, bytes], None]:
        seen: dict[str, bytes] | None = None
        while True:
            async with self._tokens_changed:
                await self._tokens_changed.wait_for(partial(self._tokens_replaced, seen))
                seen = self._tokens
            yield dict(seen)

    def _tokens_replaced(self, seen: dict[str, bytes] | None) -> bool:
        return self._tokens is not seen

    async def _set_token(self, token_id: str, record: bytes | None) -> bool:
        """Write (or, with None, delete) one token record; False if there was none to delete."""
        async with self._write_lock:
            tokens = dict(self._tokens)
            existed = tokens.pop(token_id, None) is not None
            if record is None and not existed:
                return False
            if record is not None:
                tokens[token_id] = record
            document = _dump(self._projects, self._revision, tokens, self._history)
            await asyncio.to_thread(write_atomically, self.path, document)
            async with self._tokens_changed:
                self._tokens = tokens
                self._tokens_changed.notify_all()
            return True


def _check_expected(
    project_id: str, current: StoredProject | None, expected_revision: int | None
) -> None:
    if expected_revision is None:
        return
    actual = current.revision if current else None
    if expected_revision == ABSENT:
        if current is not None:
            raise RevisionMismatch(project_id, ABSENT, actual)
    elif actual != expected_revision:
        raise RevisionMismatch(project_id, expected_revision, actual)


def _acquire_lock(path: Path) -> IO[bytes]:
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = lock_path.open("ab")
    except OSError as exc:
        raise StoreConfigError(f"cannot open the lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise StoreConfigError(
            f"{path} is in use by another space-cloud process (it holds {lock_path})"
        ) from None
    return lock_file


def _load(path: Path) -> tuple[dict[str, StoredProject], int, dict[str, bytes], History]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}, 0, {}, {}
    except OSError as exc:
        raise StoreConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        document = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise StoreConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    projects, revision = _parse(path, document)
    tokens = _parse_tokens(path, document.get("tokens"))
    return projects, revision, tokens, parse_history(path, document.get("history"))


def _parse(path: Path, document: Any) -> tuple[dict[str, StoredProject], int]:
    if not isinstance(document, dict) or not isinstance(document.get("projects", []), list):
        raise StoreConfigError(f"{path} must hold a mapping with a 'projects' list")
    revision = _revision(path, "revision", document.get("revision"))
    revisions = document.get("revisions") or {}
    if not isinstance(revisions, dict):
        raise StoreConfigError(f"{path}: 'revisions' must map project ids to revisions")
    entries = document.get("projects") or []
    # A plain Space Cloud file has no revisions: its projects date from revision 1.
    if entries:
        revision = max(revision, 1)
    projects: dict[str, StoredProject] = {}
    for position, entry in enumerate(entries):
        # The sync layer judges every entry (docs/design.md §12): one without a string id
        # goes up under its position, a key no project id can take, and is not served.
        project_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(project_id, str):
            project_id = f"projects[{position}]"
        # A project added by hand has no revision yet: it dates from the current one.
        known = _revision(path, f"revisions.{project_id}", revisions.get(project_id))
        project_revision = known or revision
        revision = max(revision, project_revision)
        projects[project_id] = StoredProject(project_id, _encode(entry), project_revision)
    return projects, revision


def _parse_tokens(path: Path, tokens: Any) -> dict[str, bytes]:
    """The token records as JSON bytes; whether each is a usable record is for the
    reader to check (``TokenRecord.from_json``), like any value read from a store."""
    if tokens is None:
        return {}
    if not isinstance(tokens, dict) or not all(isinstance(key, str) for key in tokens):
        raise StoreConfigError(f"{path}: 'tokens' must map token ids to token records")
    try:
        return {token_id: orjson.dumps(record) for token_id, record in tokens.items()}
    except TypeError as exc:
        raise StoreConfigError(f"{path}: a token record is not plain data ({exc})") from None


def _encode(entry: Any) -> bytes:
    """JSON for a YAML entry; one JSON cannot hold (a set, binary) becomes a string."""
    try:
        return orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return orjson.dumps(repr(entry))


def _revision(path: Path, where: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreConfigError(f"{path}: {where} must be a whole number, not {value!r}")
    return value


def _dump(
    projects: dict[str, StoredProject],
    revision: int,
    tokens: dict[str, bytes],
    history: History,
) -> bytes:
    document: dict[str, Any] = {
        "revision": revision,
        "projects": [orjson.loads(project.value) for project in projects.values()],
        "revisions": {project.id: project.revision for project in projects.values()},
    }
    if tokens:
        document["tokens"] = {token_id: orjson.loads(value) for token_id, value in tokens.items()}
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return _HEADER + body.encode() + b"history: " + dump_history(history) + b"\n"
