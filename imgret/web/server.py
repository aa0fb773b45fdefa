"""Running the web app with uvicorn: localhost by default, a token when exposed."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import LOOPBACK_HOSTS, WebConfig

__all__ = ["serve", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.1, ::1, localhost: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    """Serve a collection until interrupted.

    On a non-loopback `host` a random token is made unless one is given or `require_token`
    is False; on loopback no token is needed unless given. Host headers are checked against
    localhost names when bound to 127.0.0.1 or localhost (against DNS rebinding).
    """
    import uvicorn

    from .app import create_app

    config = config or WebConfig()
    exposed = not is_loopback(host)
    if token is None and (require_token if require_token is not None else exposed):
        token = secrets.token_urlsafe(18)
    if host not in LOOPBACK_HOSTS and config.allowed_hosts == LOOPBACK_HOSTS:
        config = replace(config, allowed_hosts=("*",))  # reached by other names
    app = create_app(collection_path, token=token, config=config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    service = app.state.service
    log(f"serving {service.collection.path} ({len(service):,} images) at {url}")
    if exposed and token is None:
        log("warning: reachable from other machines without an access token")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
