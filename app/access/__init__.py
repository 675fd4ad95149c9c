"""Access control: roles and project scopes, principals, credentials, login limiting.

Nothing here knows HTTP or the store: ``app.auth`` turns requests into principals, and
the routes ask a principal what it may do.
"""

from app.access.errors import AccessError, InvalidScope, MalformedToken, TokenRefused
from app.access.principal import Principal
from app.access.scopes import ProjectPattern, ProjectScope, Role, StreamScope

__all__ = [
    "AccessError",
    "InvalidScope",
    "MalformedToken",
    "Principal",
    "ProjectPattern",
    "ProjectScope",
    "Role",
    "StreamScope",
    "TokenRefused",
]
