"""The protocol every config store implements, and the errors it raises.

A store holds two things per cluster (docs/design.md §3):

* projects, keyed by id, each a JSON document with a *revision*: the store's own
  cluster-wide, ever-growing modification number (etcd ``mod_revision``, Consul
  ``ModifyIndex``, a counter in the local file);
* live instances, each registered under a TTL (etcd lease, Consul session) that the
  store keeps alive until :meth:`Store.deregister` or the process dies.

The sync loop (``app.sync``) lists, then watches from the listed revision + 1; a store
raises :class:`WatchReset` when it cannot continue a watch without a gap (etcd
compaction, a Consul index that went backwards) and :class:`StoreUnavailable` when it
cannot reach its server. Both make the loop back off and list again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

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

    # --- projects -----------------------------------------------------------------

    async def list_projects(self) -> ProjectListing: ...

    async def put_project(
        self, project_id: str, value: bytes, expected_revision: int | None = None
    ) -> PutResult:
        """Create or replace a project.

        ``expected_revision``: None writes unconditionally, :data:`ABSENT` only creates,
        any other number only replaces that exact revision. A mismatch raises
        :class:`RevisionMismatch`; the check and the write are one atomic step.
        """

    async def delete_project(self, project_id: str, expected_revision: int | None = None) -> int:
        """Delete a project, optionally only at ``expected_revision``; returns the
        revision of the deletion. Raises :class:`ProjectNotFound` / :class:`RevisionMismatch`.
        """

    def watch_projects(self, since: ProjectListing) -> AsyncIterator[list[ProjectChange]]:
        """Yield batches of the changes made after the listing ``since``, in revision order.

        ``since`` is the last listing the caller applied (etcd watches from its revision + 1;
        Consul, whose blocking queries return the whole prefix, diffs against it). Every
        change is yielded exactly once. Ends only by raising (:class:`WatchReset`,
        :class:`StoreUnavailable`) or by cancellation.
        """

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


# --- the store layout (docs/design.md §3), the same for etcd and Consul ---------------

MiB = 1024 * 1024
#: etcd refuses requests over 1.5 MiB (``--max-request-bytes``); the key, the compare of
#: a transaction and the framing need room beside the value.
ETCD_VALUE_LIMIT = int(1.5 * MiB) - 4096
#: Every Consul write is one ``/v1/txn`` (its result carries the write's revision), whose
#: body Consul caps at ``txn_max_req_len`` (512 KiB) with the value base64-encoded in it.
#: Measured on Consul 1.8.7: 392 898 bytes is the largest value the server takes in the
#: store's largest transaction (63-character cluster and project ids, a 20-digit cas
#: index, the deletion mark's delete); 1 byte more is a 413.
CONSUL_VALUE_LIMIT = 392_898


def projects_prefix(cluster_id: str) -> str:
    """``sc/projects/<cluster>/``: the trailing ``/`` keeps cluster ``a`` out of ``ab``."""
    return f"sc/projects/{cluster_id}/"


def instances_prefix(cluster_id: str) -> str:
    return f"sc/instances/{cluster_id}/"
