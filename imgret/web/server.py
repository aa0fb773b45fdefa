"""Running the web app with uvicorn: localhost by default, a token when exposed."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..core.errors import UserError
from .config import LOOPBACK_HOSTS, WebConfig

__all__ = ["serve", "is_loopback", "host_policy", "bind"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_policy(
    host: str, token: str | None, require_token: bool | None, config: WebConfig
) -> tuple[str | None, WebConfig]:
    """(token, config) for serving on `host`.

    A loopback address (any of 127.0.0.0/8, ::1, localhost) answers only to loopback host
    names and its own address (against DNS rebinding); no token is needed unless given. Any
    other address answers to every host name and gets a random token unless one is given or
    `require_token` is False.
    """
    exposed = not is_loopback(host)
    if token is None and (require_token if require_token is not None else exposed):
        token = secrets.token_urlsafe(18)
    if config.allowed_hosts == LOOPBACK_HOSTS:
        own = host.strip("[]").lower()
        hosts = (*LOOPBACK_HOSTS, own) if not exposed else ("*",)
        config = replace(config, allowed_hosts=tuple(dict.fromkeys(hosts)))
    return token, config


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; UserError (one line) when the port is taken."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    # The protocol given, so that asyncio turns Nagle's algorithm off for each connection
    # (it checks for IPPROTO_TCP): else every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UserError(
            f"cannot serve on {host}:{port}: {e.strerror or e}"
            + (" (another program uses the port; choose one with --port)" if e.errno == 98 else "")
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    collection_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    require_token: bool | None = None,
    config: WebConfig | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Serve a collection until interrupted (see host_policy for the token and host names).

    The port is taken before the collection is loaded, so a port in use is reported at once
    and nothing says "serving" before it is.
    """
    import uvicorn

    from .app import create_app

    token, config = host_policy(host, token, require_token, config or WebConfig())
    sock = bind(host, port)
    try:
        app = create_app(collection_path, token=token, config=config)
        bare = host.strip("[]")
        shown = f"[{bare}]" if ":" in bare else bare
        url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
        service = app.state.service
        log(f"serving {service.path} ({len(service):,} images) at {url}")
        if not is_loopback(host) and token is None:
            log("warning: reachable from other machines without an access token")
        if config.allow_add is not None:
            log(f"the pages may add images: uploads, and folders under {config.allow_add}")
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30)
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
