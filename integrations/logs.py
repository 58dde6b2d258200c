"""How `signoff serve` logs: quiet by default (other libraries' internals at WARNING), as text or JSON lines.

One `logging.config.dictConfig` for the root logger, applied at start and by uvicorn in each worker process;
uvicorn's own loggers propagate to it, so every line has one format.
"""

import json
import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["INTERNALS", "JsonFormatter", "configure_logging", "logging_config"]

# Libraries whose INFO lines say what they do inside (APScheduler logs every job run: most of a default log),
# not what signoff did. They log at WARNING and above unless `--log-level debug` asks for everything.
INTERNALS = (
    "apscheduler",
    "mcp",
    "httpx2",
    "httpcore",
    "sqlalchemy",
    "alembic",
    "aiohttp",
    "slack_bolt",
    "slack_sdk",
    "asyncio",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has (and uvicorn's `color_message`, its message with terminal colours): anything else on a
# record was passed as `extra=` and goes into the JSON object.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record comes, not as it was when logging was configured: a stream
    replaced since (redirected, or captured and closed by whatever ran `main` in-process) is never written to."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def logging_config(level: str, style: str = "text") -> dict[str, Any]:
    """The dictConfig: `level` ("debug", "info", ...) to stderr as `style` "text" or "json"; internals at WARNING
    (at DEBUG too when `level` is debug)."""
    formatter: dict[str, Any] = {"()": f"{__name__}.JsonFormatter"} if style == "json" else {"format": TEXT_FORMAT}
    root = level.upper()
    quiet = "DEBUG" if root == "DEBUG" else max(root, "WARNING", key=logging.getLevelName)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"signoff": formatter},
        "handlers": {"stderr": {"class": f"{__name__}.StderrHandler", "formatter": "signoff"}},
        "root": {"level": root, "handlers": ["stderr"]},
        "loggers": {
            **{name: {"level": quiet} for name in INTERNALS},
            # uvicorn's loggers carry their own handlers by default; here they only propagate to the root.
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
        },
    }


def configure_logging(level: str, style: str = "text") -> None:
    """Apply `logging_config(level, style)` in this process."""
    logging.config.dictConfig(logging_config(level, style))
