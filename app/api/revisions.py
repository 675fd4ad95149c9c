"""Revision numbers as clients send them: ``?waitRevision=``, ``If-Match`` and
``If-None-Match``, a version's path, a rollback body, ``Last-Event-ID``, ``?before=``.

A number is ASCII digits up to the highest revision a store can name; anything else is
not one (a 400 where one is asked for), never an exception: ``int()`` takes other
scripts' digits, refuses some that ``str.isdigit()`` accepts (``²``) and raises on more
than 4 300 digits.
"""

from __future__ import annotations

import re
from typing import Any

#: etcd's revisions are signed 64-bit (Consul's indexes unsigned; the local counter is
#: the gateway's own): no store has ever made a higher one.
MAX_REVISION = 2**63 - 1

_DIGITS = re.compile(rf"[0-9]{{1,{len(str(MAX_REVISION))}}}")


def parse_number(text: str, lowest: int = 0, highest: int = MAX_REVISION) -> int | None:
    """``text`` as a whole number from ``lowest`` to ``highest``, or None."""
    if _DIGITS.fullmatch(text) is None:
        return None
    number = int(text)
    return number if lowest <= number <= highest else None


def number_schema(lowest: int = 0, highest: int = MAX_REVISION) -> dict[str, Any]:
    """The OpenAPI schema of what :func:`parse_number` takes."""
    return {"type": "integer", "minimum": lowest, "maximum": highest}
