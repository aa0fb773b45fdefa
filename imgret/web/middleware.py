"""ASGI middleware of the web app: Host check, cross-site guard, request size limit, headers.

The access token (imgret/web/auth.py) sits between the cross-site guard and the size limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HostGuard", "CrossSiteGuard", "BodyLimit", "SecurityHeaders", "header", "send_json",
           "host_name"]  # fmt: skip

# Pages and API answers may only load what the app itself serves (uploads are shown as blobs).
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# The API documentation pages (Swagger UI, ReDoc, served from the package): their scripts are
# ours too, but they set styles inline and ReDoc searches in a worker made from a blob.
_DOCS_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; font-src 'self' data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_DOC_PATHS = ("/docs", "/redoc")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def send_json(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def host_name(value: str) -> str:
    """The host of a Host header or an origin's authority, lower case, without the port:
    ``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostGuard:
    """Refuse (400) a request whose Host header names another host than `allowed` ("*": any).

    Against DNS rebinding: a page of another site whose name resolves to 127.0.0.1 sends its
    own name as Host. IPv6 hosts are compared without brackets.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = {host_name(h) if h.startswith("[") else h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.any:
            if host_name(header(scope, b"host") or "") not in self.allowed:
                await send_json(send, 400, "invalid host header: this server answers only to "
                                "its own address")  # fmt: skip
                return
        await self.app(scope, receive, send)


class CrossSiteGuard:
    """Refuse (403) a state-changing request (any method but GET, HEAD, OPTIONS) sent by a page
    of another site, with or without an access token: by `Sec-Fetch-Site` when the browser
    sends it (it is exact: a form posted from a page that sends no referrer has the Origin
    "null"), else by `Origin`. Requests without either (curl, scripts) are not browsers'
    cross-site requests and pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            site = header(scope, b"sec-fetch-site")
            origin = header(scope, b"origin")
            host = header(scope, b"host") or ""
            if site is not None:
                cross = site not in ("same-origin", "none")  # "none": typed by the user
            else:
                scheme = scope.get("scheme", "http")
                expected = f"{scheme}://{host.lower()}"
                cross = origin is not None and origin.lower().rstrip("/") != expected
            if cross:
                await send_json(send, 403, "refused: a request from another site may not change "
                                "or search this collection")  # fmt: skip
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a request whose body is over its limit, before the app parses it.

    The body is read here, at most the limit of it, and handed on whole; a declared
    Content-Length over the limit is refused without reading anything. `larger`: paths (exact)
    with a limit of their own.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        too_big = f"the request is larger than the limit of {limit:,} bytes"
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, too_big)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await send_json(send, 413, too_big)
                return
        handed: list[bool] = []

        async def replay() -> Message:
            if not handed:
                handed.append(True)
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """No sniffing, no framing, no referrer, and a content security policy on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _DOCS_CSP if scope["path"] in _DOC_PATHS else _CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", csp.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
