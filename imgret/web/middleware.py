"""ASGI middleware of the web app: access token, request size limit, security headers."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TokenGate", "BodyLimit", "SecurityHeaders", "TOKEN_COOKIE"]

TOKEN_COOKIE = "imgret_token"
# Pages and API answers may only load what the app itself serves (uploads are shown as blobs).
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_DOC_PATHS = ("/docs", "/redoc")  # FastAPI's documentation pages load their scripts elsewhere


async def _send_json(send: Send, status: int, detail: str, headers: list | None = None) -> None:
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class TokenGate:
    """Every request needs the token when one is set: as `Authorization: Bearer TOKEN`, an
    `X-Imgret-Token` header, the `imgret_token` cookie, or `?token=TOKEN`.

    A page opened with a correct `?token=` gets the cookie and is redirected to the same
    address without it, so the token does not stay in the address bar or the history.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        by_query = next((v for k, v in query if k == "token"), None)
        auth = _header(scope, b"authorization") or ""
        cookie = SimpleCookie(_header(scope, b"cookie") or "").get(TOKEN_COOKIE)
        candidates = [
            auth[7:] if auth.lower().startswith("bearer ") else None,
            _header(scope, b"x-imgret-token"),
            cookie.value if cookie else None,
        ]
        if any(self._ok(c) for c in candidates):
            await self.app(scope, receive, send)
        elif (
            self._ok(by_query)
            and scope["method"] == "GET"
            and not scope["path"].startswith("/api/")
        ):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie_header = f"{TOKEN_COOKIE}={by_query}; HttpOnly; SameSite=Strict; Path=/"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location.encode()),
                        (b"set-cookie", cookie_header.encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
        elif self._ok(by_query):
            await self.app(scope, receive, send)
        else:
            await _send_json(
                send,
                401,
                "an access token is needed: open the address `imgret serve` printed (it ends "
                "in ?token=...), or send the header 'Authorization: Bearer TOKEN'",
                [(b"www-authenticate", b"Bearer")],
            )


class BodyLimit:
    """Refuse (413) a request whose body is over `max_bytes`, before the app parses it.

    The body is read here, at most `max_bytes` of it, and handed on whole; a declared
    Content-Length over the limit is refused without reading anything.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = f"the request is larger than the limit of {self.max_bytes:,} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, too_big)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _send_json(send, 413, too_big)
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
        docs = scope["path"].startswith(_DOC_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if not docs:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
