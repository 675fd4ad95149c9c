"""Who an authenticated request acts as, and what it may do."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.access.scopes import ProjectScope, Role


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a credential: a name (the admin user or a token's name), a role, the
    projects the role applies to, when the credential expires (epoch seconds; None:
    never), and the id of the minted token it holds (None: an admin login). Every route
    asks it rather than looking at the role itself."""

    name: str
    role: Role
    scope: ProjectScope
    expires_at: float | None = None
    token_id: str | None = None

    @classmethod
    def admin(cls, name: str, expires_at: float | None = None) -> Principal:
        return cls(name, Role.ADMIN, ProjectScope.everything(), expires_at)

    def may_read(self, project_id: str) -> bool:
        return self.scope.matches(project_id)

    def may_write(self, project_id: str) -> bool:
        return self.role.may_write and self.scope.matches(project_id)

    @property
    def may_admin(self) -> bool:
        """Cluster-wide powers: minting and revoking tokens, every project."""
        return self.role is Role.ADMIN and self.scope.is_everything

    def expired(self, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at <= (time.time() if now is None else now)
