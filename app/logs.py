"""Logging for ``space-cloud run``: one format for every line (ours, uvicorn's, the access
log), plain text or one JSON object per line (``LOG_FORMAT=json``), tokens redacted
(docs/design.md §11, "Logs").

uvicorn is started with ``log_config=None`` after :func:`configure_logging`, so its own
loggers propagate to the same handler instead of getting formatters of their own.
"""

from __future__ import annotations

import logging
import logging.config
import re
import time
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
#: Query parameters whose value is a credential, compared after percent-decoding and
#: lower-casing, so ``?%74oken=`` and ``?TOKEN=`` are caught as well as ``?token=``.
SECRET_PARAMETERS = frozenset({"token", "access_token", "upstream_token", "pass", "password"})

_QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"'#?]+)=([^&;\s\"'#]*)")
#: A JSON Web Token (header.payload.signature, base64url): what ``/v1/config/login``
#: hands out, wherever it turns up in a line.
_JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*")
#: A minted token (``sct_<id>.<secret>``, from ``/v1/config/tokens``), wherever it turns up.
_MINTED = re.compile(r"\bsct_[0-9a-f]+\.[\w-]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def redact(text: str) -> str:
    """``text`` with every token in it replaced by ``[redacted]``."""
    text = _QUERY_PARAMETER.sub(_redact_parameter, text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _MINTED.sub(REDACTED, text)
    return _JWT.sub(REDACTED, text)


def _redact_parameter(match: re.Match[str]) -> str:
    name = unquote_plus(match.group(2)).strip().lower()
    if name in SECRET_PARAMETERS:
        return f"{match.group(1)}{match.group(2)}={REDACTED}"
    return match.group(0)


class RedactTokens(logging.Filter):
    """Keeps tokens out of every line, in the message and in its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                key: redact(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        return True


class RepeatedLines(logging.Filter):
    """Drops a line identical to one printed less than ``window`` seconds ago, and counts
    it; the next time that line is printed it says how many were dropped. A store outage
    makes every retry loop (lease renewal, watches, registration) say the same thing
    several times a second; the sync layer reports the outage itself (app/sync_log.py)."""

    def __init__(self, window: float = 30.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        #: (logger, level, line) -> (printed at, dropped since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" or record.levelno >= logging.ERROR:
            return True
        now = self._clock()
        key = (record.name, record.levelno, record.getMessage())
        printed_at, dropped = self._seen.get(key, (0.0, 0))
        if key in self._seen and now - printed_at < self._window:
            self._seen[key] = (printed_at, dropped + 1)
            return False
        if len(self._seen) >= 1024:
            self._forget(now)
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{key[2]} (and {dropped} times more in the last {self._window:g}s)"
            record.args = None
        return True

    def _forget(self, now: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` (and
    ``client``, ``method``, ``path``, ``status`` for an access-log line, ``exception``
    when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(_access_fields(record.args))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return orjson.dumps(line).decode()


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    """uvicorn's access record is ``(client, method, path, http_version, status)``."""
    if len(args) != 5:
        return {}
    client, method, path, _http_version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """One stderr handler for every logger; uvicorn's loggers propagate to it."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact_tokens": {"()": RedactTokens},
            "repeated_lines": {"()": RepeatedLines},
        },
        "formatters": {"line": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["redact_tokens", "repeated_lines"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # One line per Consul request otherwise.
            "httpx": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: LogFormat, level: str) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
    logging.captureWarnings(True)  # Python's warnings become lines of the same format
