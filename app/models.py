"""The pydantic models the HTTP API and the event stream speak."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Project(BaseModel):
    """A project config as Space Cloud has it; modules are kept as given."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=PROJECT_ID_PATTERN, examples=["todo-app"])
    name: str = Field("", examples=["Todo app"])
    secret: str = Field("", examples=["s3cr3t"])
    modules: dict[str, Any] = Field(default_factory=dict)


class ProjectWritten(BaseModel):
    project: str = Field(description="The project id.")
    revision: int = Field(description="The store revision of this write.")


class ProjectList(BaseModel):
    projects: list[Project]
    revision: int = Field(description="The revision as of which this list is complete.")


class Peer(BaseModel):
    id: str
    addr: str
    version: str
    startedAt: str
    appliedRevision: int
    self: bool = False


class PeerList(BaseModel):
    peers: list[Peer]


class Env(BaseModel):
    version: str
    storeType: str
    clusterId: str
    nodeId: str
    advertiseAddr: str
    dev: bool


class Credentials(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    user: str
    password: str = Field(alias="pass")


class Token(BaseModel):
    token: str
    expiresAt: int = Field(description="Expiry, in seconds since the epoch.")


class Health(BaseModel):
    status: str
    revision: int | None = None


class ErrorBody(BaseModel):
    error: str = Field(examples=["project 'todo' does not exist"])
