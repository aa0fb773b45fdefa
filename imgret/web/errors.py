"""An error the web app answers with an HTTP status and a message ({"detail": message})."""

from __future__ import annotations

__all__ = ["WebError"]


class WebError(Exception):
    """A request that cannot be served: `status` is the HTTP status (4xx), `message` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
