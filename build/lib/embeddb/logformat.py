"""How the ``embeddb`` command logs: the text format people read, or one JSON object a line.

``--log-format json`` writes every record as a JSON object with ``time``, ``level``,
``logger`` and ``message``, plus the structured fields the code attached (a batch has
``column``, ``batch_size``, ``rows``, ``superseded``, ``failed``, ``seconds``,
``rows_per_second`` and ``overall_rows_per_second``)::

    {"time": "2026-11-23T10:04:05.120Z", "level": "INFO", "logger": "embeddb.worker",
     "message": "public.tickets.embedding: 256 stored, ...", "column": "public.tickets.embedding",
     "batch_size": 256, "rows": 256, "seconds": 7.9, "rows_per_second": 32.4, ...}

Messages never carry row text; a password in a URL is masked all the same.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")

# the attributes every LogRecord has; anything else on a record came in through ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_URL_PASSWORD = re.compile(r"(\w+://[^:/?#@\s]*:)[^@/\s]+@")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_passwords(record.getMessage()),
        }
        fields.update({key: value for key, value in vars(record).items()
                       if key not in _STANDARD and not key.startswith("_")})
        if record.exc_info:
            fields["exception"] = mask_passwords(self.formatException(record.exc_info))
        return json.dumps(fields, default=str)


def mask_passwords(text: str) -> str:
    """``postgresql://user:secret@host`` becomes ``postgresql://user:***@host``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def configure(level: int, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text``, the default, or ``json``)."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=TEXT_FORMAT)


def _utc(created: float) -> str:
    milliseconds = int(created % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{milliseconds:03d}Z"


__all__ = ["FORMATS", "JsonFormatter", "configure", "mask_passwords"]
