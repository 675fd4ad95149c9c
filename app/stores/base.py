"""The protocol every config store implements, and the errors it raises.

A store holds three things per cluster (docs/design.md §3):

* projects, keyed by id, each a JSON document with a *revision*: the store's own
  cluster-wide, ever-growing modification number (etcd ``mod_revision``, Consul
  ``ModifyIndex``, a counter in the local file);
* live instances, each registered under a TTL (etcd lease, Consul session) that the
  store keeps alive until :meth:`Store.deregister` or the process dies;
* minted tokens' records, keyed by token id (only a hash of each secret).

The sync loop (``app.sync``) lists, then watches from the listed revision + 1; a store
raises :class:`WatchReset` when it cannot continue a watch without a gap (etcd
compaction, a Consul index that went backwards) and :class:`StoreUnavailable` when it
cannot reach its server. Both make the loop back off and list again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

#: ``expected_revision`` value that means "only if the project does not exist yet".
ABSENT = 0


class StoreError(Exception):
    """Base class of every error a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached (or timed out); retry later."""


class StoreConfigError(StoreError):
    """The store cannot be used as configured (bad credentials, TLS, a locked file).

    Raised at start-up; the command line reports it in one line and exits 2.
    """


class StoreVariableError(StoreConfigError):
    """A connection variable (``ETCD_*``, ``CONSUL_*``) holds a value that cannot work.

    The message is one line that names the variable to fix.
    """

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(message)

    @classmethod
    def invalid(cls, variable: str, value: str, problem: str) -> StoreVariableError:
        return cls(variable, f"invalid {variable} {value!r}: {problem}")

    @classmethod
    def pair(cls, missing: str, given: str) -> StoreVariableError:
        return cls(missing, f"{given} and {missing} go together: set both or neither")


class NotRegistered(StoreError):
    """:meth:`Store.update_registration` was called before :meth:`Store.register`."""

    def __init__(self) -> None:
        super().__init__("update_registration() before register()")


class RevisionMismatch(StoreError):
    """A conditional write found another revision than the one it expected."""

    def __init__(self, project_id: str, expected: int, actual: int | None) -> None:
        self.project_id = project_id
        self.expected = expected
        self.actual = actual
        if expected == ABSENT:
            message = f"project {project_id!r} already exists"
        elif actual is None:
            message = f"project {project_id!r} does not exist"
        else:
            message = f"project {project_id!r} is at revision {actual}, not {expected}"
        super().__init__(message)


class ProjectNotFound(StoreError):
    """The project to delete does not exist."""

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        super().__init__(f"project {project_id!r} does not exist")


class ValueTooLarge(StoreError):
    """The encoded project is over the store's value limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the project is {size} bytes; this store takes at most {limit}")


class WatchReset(StoreError):
    """The watch cannot go on without a gap: list again and resync."""


@dataclass(frozen=True, slots=True)
class StoredProject:
    """One project as the store holds it: its id, JSON bytes and revision."""

    id: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class ProjectListing:
    """Every project of the cluster, complete as of store revision ``revision``."""

    projects: Mapping[str, StoredProject]
    revision: int


@dataclass(frozen=True, slots=True)
class ProjectChange:
    """One change seen by a watch, in revision order."""

    kind: Literal["put", "delete"]
    id: str
    revision: int
    value: bytes | None = None  # the new JSON for a put; None for a delete


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    created: bool


# --- versions (docs/design.md, "Versions") ----------------------------------------------

#: How many versions of a project a store keeps unless told otherwise (PROJECT_VERSIONS).
DEFAULT_PROJECT_VERSIONS = 50
#: A longer ``by`` is cut to this many characters, so a version's size stays bounded.
MAX_AUTHOR_LENGTH = 256
#: At most this many old versions are pruned by one write (the next writes prune the rest),
#: so lowering PROJECT_VERSIONS never makes a transaction outgrow the store's limits.
MAX_PRUNED_PER_WRITE = 16


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class VersionStamp:
    """Who made a write, on which instance, and when: recorded with the write's version."""

    by: str
    node: str
    at: str = field(default_factory=utc_timestamp)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by", self.by[:MAX_AUTHOR_LENGTH])

    @classmethod
    def unattributed(cls) -> VersionStamp:
        """For a write whose caller says nothing about itself (tools, tests)."""
        return cls(by="", node="")


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a project: the write at ``revision``, what it was and who made it.

    ``value`` is the project's JSON for a put, None for a delete.
    """

    project_id: str
    revision: int
    op: Literal["put", "delete"]
    at: str
    by: str
    node: str
    value: bytes | None = None

    def summary(self) -> dict[str, Any]:
        """``{revision, op, at, by, node}``, as a history listing shows it."""
        return {
            "revision": self.revision,
            "op": self.op,
            "at": self.at,
            "by": self.by,
            "node": self.node,
        }


def encode_version(
    op: Literal["put", "delete"], stamp: VersionStamp, value: bytes | None, **extra: Any
) -> bytes:
    """A version record as stored: ``{op, at, by, node, project, ...extra}``, the
    project's JSON embedded as it is (it is compact JSON already)."""
    project = orjson.Fragment(value) if value is not None else None
    record = {"op": op, "at": stamp.at, "by": stamp.by, "node": stamp.node, "project": project}
    return orjson.dumps({**extra, **record})


def decode_version(project_id: str, revision: int, raw: bytes) -> Version | None:
    """The version a stored record describes; None for a record that is not one (written
    by another tool): history is read like any store value, untrusted."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("op") not in ("put", "delete"):
        return None
    project = record.get("project")
    if (record["op"] == "put") != isinstance(project, dict):
        return None
    at, by, node = record.get("at"), record.get("by"), record.get("node")
    if not (isinstance(at, str) and isinstance(by, str) and isinstance(node, str)):
        return None
    value = _project_bytes(raw, project) if project is not None else None
    return Version(project_id, revision, record["op"], at, by, node, value)


_PROJECT_FIELD = b',"project":'


def _project_bytes(raw: bytes, project: Any) -> bytes:
    """The project's JSON exactly as written: :func:`encode_version` puts it last, after
    fields whose quotes are escaped, so the first ``,"project":`` is the field's. A record
    laid out otherwise (another tool's) gets its project re-encoded."""
    start = raw.find(_PROJECT_FIELD)
    if start >= 0 and raw.endswith(b"}"):
        exact = raw[start + len(_PROJECT_FIELD) : -1]
        try:
            if orjson.loads(exact) == project:
                return exact
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps(project)


@dataclass
class VersionCounts:
    """Versions this store has written and pruned since it was opened (for /metrics)."""

    written: int = 0
    pruned: int = 0


@runtime_checkable
class Store(Protocol):
    """What the gateway needs of a config store; one instance per process."""

    #: ``local``, ``etcd`` or ``consul``, as ``GET /v1/config/env`` reports it.
    kind: str
    #: The largest encoded project the store accepts, in bytes.
    value_limit: int

    async def open(self) -> None:
        """Connect; raise :class:`StoreConfigError` for a setting that can never work."""

    async def close(self) -> None:
        """Stop background work and release connections (deregisters first if needed)."""

    async def check(self) -> None:
        """Prove the store is reachable with these settings (one cheap round trip).

        Raises :class:`StoreUnavailable` or :class:`StoreConfigError`.
        """

    async def current_revision(self) -> int:
        """The store's revision now, which no project's revision can pass (one round trip)."""

    # --- projects -----------------------------------------------------------------

    async def list_projects(self) -> ProjectListing: ...

    async def put_project(
        self,
        project_id: str,
        value: bytes,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> PutResult:
        """Create or replace a project, and record its version (``stamp``: who, where,
        when) in the same atomic step.

        ``expected_revision``: None writes unconditionally, :data:`ABSENT` only creates,
        any other number only replaces that exact revision. A mismatch raises
        :class:`RevisionMismatch`; the check and the write are one atomic step.
        """

    async def delete_project(
        self,
        project_id: str,
        expected_revision: int | None = None,
        stamp: VersionStamp | None = None,
    ) -> int:
        """Delete a project, optionally only at ``expected_revision``, recording a delete
        version in the same atomic step; returns the revision of the deletion.
        Raises :class:`ProjectNotFound` / :class:`RevisionMismatch`.
        """

    def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        """Yield batches of the changes made after the listing ``since``, in revision order.

        ``since`` is the last listing the caller applied (etcd watches from its revision + 1;
        Consul reads its change log from there, and diffs against it what the log does not
        hold). Every
        change is yielded exactly once. Ends only by raising (:class:`WatchReset`,
        :class:`StoreUnavailable`) or by cancellation.
        """

    async def changes_between(self, after: int, through: int) -> list[ProjectChange] | None:
        """Every change with ``after < revision <= through``, in revision order (puts with
        their values as written); None when the store no longer holds them all (etcd:
        compacted) or cannot replay its history at all. Serves resumes older than an
        instance's in-memory history (docs/design.md §6). Raises :class:`StoreUnavailable`
        when the store cannot be asked."""

    # --- versions -----------------------------------------------------------------

    @property
    def version_counts(self) -> VersionCounts:
        """Versions written and pruned by this store object."""

    async def list_versions(
        self, project_id: str, *, limit: int, before: int | None = None
    ) -> list[Version]:
        """The project's versions, newest first: at most ``limit``, only those older than
        revision ``before`` if given. Also after the project's deletion."""

    async def get_version(self, project_id: str, revision: int) -> Version | None:
        """The project's version written at ``revision``; None if there is none (kept)."""

    # --- instances ----------------------------------------------------------------

    async def register(self, node_id: str, record: bytes) -> None:
        """Register this instance under a TTL and keep it alive in the background,
        re-registering at once whenever the lease/session is lost."""

    async def update_registration(self, record: bytes) -> None:
        """Replace this instance's record (same lease/session)."""

    async def deregister(self) -> None:
        """Remove this instance's key at once and stop keeping it alive."""

    def watch_instances(self) -> AsyncIterator[dict[str, bytes]]:
        """Yield the full map ``node id -> record`` now and on every change.

        Raises :class:`StoreUnavailable` when the store cannot be reached; the caller
        retries.
        """

    # --- minted tokens (docs/design.md §9) ------------------------------------------

    async def put_token(self, token_id: str, record: bytes) -> None:
        """Store a token record (``TokenRecord.to_json``) under its id."""

    async def delete_token(self, token_id: str) -> bool:
        """Delete a token record; False when there was none."""

    async def list_tokens(self) -> dict[str, bytes]:
        """Every token record, by id, as stored (untrusted: the caller checks each)."""

    def watch_tokens(self) -> AsyncIterator[dict[str, bytes]]:
        """Yield the full map ``token id -> record`` now and on every change.

        A full map rather than changes: token sets are small and rarely change, and a
        full map makes every yield a complete resync. Raises :class:`StoreUnavailable`
        or :class:`WatchReset`; the caller starts a new watch.
        """


# --- the store layout (docs/design.md §3), the same for etcd and Consul ---------------

MiB = 1024 * 1024
#: etcd refuses requests over 1.5 MiB (``--max-request-bytes``), and a write's transaction
#: carries the project twice: as the project and inside its version. Measured on etcd 3.4
#: (tests/test_store_etcd.py checks it): 785 571 bytes is the largest project that fits
#: the largest transaction (63-character ids, the longest author and node id, an If-Match
#: compare, the check of the last version and 16 pruned versions); a little below it
#: leaves room for wider revision numbers.
ETCD_VALUE_LIMIT = 785_408
#: Every Consul write is one ``/v1/txn`` (its result carries the write's revision), whose
#: body Consul caps at ``txn_max_req_len`` (512 KiB) with every value base64-encoded in
#: it, the project twice (beside its version). Measured on Consul 1.8.7
#: (tests/test_store_consul.py checks it): 196 011 to 196 018 bytes (with the random
#: Flags' width) is the largest project the largest transaction takes (63-character ids,
#: the longest author and node id, a cas index, the change log's entry, the check of
#: the last version and 16 pruned versions); a few bytes below it leave room for the
#: widest cas index and Flags.
CONSUL_VALUE_LIMIT = 196_000


def projects_prefix(cluster_id: str) -> str:
    """``sc/projects/<cluster>/``: the trailing ``/`` keeps cluster ``a`` out of ``ab``."""
    return f"sc/projects/{cluster_id}/"


def instances_prefix(cluster_id: str) -> str:
    return f"sc/instances/{cluster_id}/"


def history_prefix(cluster_id: str, project_id: str) -> str:
    """``sc/history/<cluster>/<project>/``: the project's versions."""
    return f"sc/history/{cluster_id}/{project_id}/"


def histories_prefix(cluster_id: str) -> str:
    """``sc/history/<cluster>/``: every project's versions."""
    return f"sc/history/{cluster_id}/"


def tokens_prefix(cluster_id: str) -> str:
    return f"sc/tokens/{cluster_id}/"
