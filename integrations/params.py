"""Reading the ids and numbers a request carries in its path and query, as the API and the web page both do.

Neither ever raises on what a client sends: an id that is not a UUID is no id (the caller answers 404, as for an
id nobody has), and a limit that is not a number is the default.
"""

import uuid

from starlette.requests import Request

__all__ = ["limit", "path_id"]


def path_id(request: Request, name: str = "id") -> uuid.UUID | None:
    """The UUID in the path parameter `name`, or None when it is not one."""
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        return None


def limit(request: Request, default: int = 100, most: int = 1000) -> int:
    """`?limit=`, between 1 and `most`; `default` when absent or not a whole number."""
    raw = request.query_params.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()):
        return default
    return max(1, min(int(raw) if len(raw) <= 9 else most, most))  # int() refuses 4,300 digits and more
