"""The access token: every request needs it when one is set.

It is accepted in a header (`Authorization: Bearer TOKEN` or `X-Imgret-Token`) or in the
`imgret_token` cookie, which the login page sets: `/login` asks for the token, and the address
`imgret serve` prints (`/?token=TOKEN`) logs in at once and is redirected to the same page
without it, so that the token stays out of the address bar and the history. A token in the
address of an API request (`/api/...?token=`) is refused: such addresses end up in logs.
A page opened without the token leads to the login page; an API request gets 401.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from .middleware import header, send_json

__all__ = ["TokenGate", "TOKEN_COOKIE"]

TOKEN_COOKIE = "imgret_token"
LOGIN_PAGE = Path(__file__).resolve().parent / "static" / "login.html"
# What the login page itself needs, open without the token.
_OPEN = ("/login", "/static/style.css", "/static/login.js", "/favicon.ico")
_MAX_FORM = 4096


async def _redirect(send: Send, location: str, cookie: str | None = None) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0"),
               (b"cache-control", b"no-store")]  # fmt: skip
    if cookie is not None:
        value = f"{TOKEN_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        headers.append((b"set-cookie", value.encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _local(target: str | None) -> str:
    """A path of this site to go to after logging in (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class TokenGate:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        auth = header(scope, b"authorization") or ""
        cookie = SimpleCookie(header(scope, b"cookie") or "").get(TOKEN_COOKIE)
        given = [
            auth[7:] if auth.lower().startswith("bearer ") else None,
            header(scope, b"x-imgret-token"),
            cookie.value if cookie else None,
        ]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        by_query = next((v for k, v in query if k == "token"), None)
        if path == "/login":
            await self._login(scope, receive, send, query)
        elif any(self._ok(c) for c in given):
            await self.app(scope, receive, send)
        elif method == "GET" and path.startswith(_OPEN):
            await self.app(scope, receive, send)
        elif method == "GET" and not path.startswith(("/api/", "/static/")) and by_query:
            if not self._ok(by_query):
                await _redirect(send, "/login?failed=1&next=" + quote(path))
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            await _redirect(send, path + (f"?{rest}" if rest else ""), cookie=by_query)
        elif method == "GET" and "text/html" in (header(scope, b"accept") or ""):
            await _redirect(send, "/login?next=" + quote(path))
        else:
            await send_json(
                send, 401,
                "an access token is needed: open the address `imgret serve` printed, or log in "
                "at /login, or send the header 'Authorization: Bearer TOKEN'",
                [(b"www-authenticate", b"Bearer")],
            )  # fmt: skip

    async def _login(self, scope: Scope, receive: Receive, send: Send, query: list) -> None:
        target = _local(next((v for k, v in query if k == "next"), None))
        if scope["method"] != "POST":
            body = LOGIN_PAGE.read_bytes()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        form = bytearray()
        more = True
        while more and len(form) <= _MAX_FORM:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            form += message.get("body", b"")
            more = message.get("more_body", False)
        fields = dict(parse_qsl(form[:_MAX_FORM].decode("latin-1")))
        target = _local(fields.get("next") or target)
        token = fields.get("token", "").strip()
        if self._ok(token):
            await _redirect(send, target, cookie=token)
        else:
            await _redirect(send, "/login?failed=1&next=" + quote(target))
