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


class TokenRequest(BaseModel):
    """What ``POST /v1/config/tokens`` takes (it checks the body itself, naming the field)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(examples=["billing-service"], description="1-64 characters.")
    role: str = Field(examples=["reader"], description="`admin`, `writer` or `reader`.")
    projects: list[str] = Field(
        examples=[["billing", "shop-*"]],
        description="Exact project ids, prefixes ending in `*`, or `*` for every project.",
    )
    ttlSeconds: int | None = Field(
        None, description="Lifetime in seconds (at most 366 days); none: until revoked."
    )


class TokenInfo(BaseModel):
    id: str
    name: str
    role: str
    projects: list[str]
    createdAt: int = Field(description="Seconds since the epoch.")
    expiresAt: int | None = Field(description="Seconds since the epoch; null: never.")


class MintedToken(TokenInfo):
    token: str = Field(description="`sct_<id>.<secret>`: shown this once, never again.")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class Credential(BaseModel):
    """Who a token stands for: what a page needs to know to show only what it may do."""

    name: str
    role: str
    projects: list[str]
    expiresAt: int | None = Field(description="Seconds since the epoch; null: never.")


class SkippedStoreValue(BaseModel):
    key: str = Field(description="The key under the projects prefix (shortened if long).")
    revision: int = Field(description="The store revision of the value.")
    reason: str = Field(examples=["not_json"])
    error: str = Field(examples=["the value is not JSON (unexpected character)"])


class Health(BaseModel):
    status: str
    revision: int | None = None
    skipped: list[SkippedStoreValue] | None = Field(
        None,
        description="Store values that are not served (never a reason to be unready).",
    )


class ErrorBody(BaseModel):
    error: str = Field(examples=["project 'todo' does not exist"])
