"""The viewer's boundary (docs/viewer.md, "Who can reach it"): every request passes these checks before routing.

Listening on loopback keeps other machines out, not other web pages in the user's own browser. So, as Jupyter
Server and Streamlit do:

- **Host**: the ``Host`` header must name the viewer as the browser reached it (``127.0.0.1:PORT``,
  ``localhost:PORT``, ``[::1]:PORT`` or the ``--host`` given); a page whose domain was rebound to 127.0.0.1
  (DNS rebinding) sends its own domain and is refused (403).
- **Token**: a random token made at start (``secrets``) must come with every request: in the URL the viewer
  prints (``/?token=...``, which sets a cookie and redirects to the same address without it), in that
  cookie, or in an ``Authorization: token ...`` header (401 otherwise). ``--no-token`` turns this off.
- **State-changing requests** (POST, ...) must say ``Content-Type: application/json`` (415 otherwise: an HTML
  form can only send ``text/plain`` and form encodings) and come from the viewer's own origin (``Origin``
  equal to ``http://`` + the accepted Host) or give none (a script such as curl); 403 otherwise.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

TOKEN_PARAMETER = "token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def new_token() -> str:
    """A random token for one viewer session (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def cookie_name(port: int) -> str:
    """Cookies are not separated by port: each viewer's has the port in its name."""
    return f"oncodiff-view-token-{port}"


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` header values accepted for a viewer listening on ``host``:``port``; None accepts any (a
    wildcard address with --allow-remote: the machine's names are not known, the token is the boundary)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    named = f"[{host}]" if ":" in host else host
    return frozenset(f"{name}:{port}" for name in {*LOOPBACK_NAMES, named})


class Guard:
    """ASGI middleware in front of the viewer app; ``token`` None: no token needed (--no-token)."""

    def __init__(self, app, token: str | None, hosts: Iterable[str] | None, port: int):
        self.app = app
        self.token = token
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self.port = port
        self.cookie = cookie_name(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return  # no websockets here
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            return await _refuse(scope, send, status, message)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if self.token is not None and TOKEN_PARAMETER in query and scope["method"] in SAFE_METHODS:
            return await self._login(scope, send, query)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return 403, (f"refused: this viewer answers only to {', '.join(sorted(self.hosts))} (Host header "
                         f"{host or '(none)'!r}); open the address `oncodiff view` printed")
        if self.token is not None and not self._has_token(scope, headers):
            return 401, ("refused: this viewer needs its access token; open the address `oncodiff view` printed "
                         f"(http://127.0.0.1:{self.port}/?token=...), or send 'Authorization: token ...'")
        if scope["method"] in SAFE_METHODS:
            return None
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return 415, (f"refused: a {scope['method']} request must have Content-Type: application/json "
                         f"(got {kind or 'none'!r})")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return 403, (f"refused: a {scope['method']} request from another site (Origin {origin!r}); the viewer "
                         "accepts changes only from its own page")
        return None

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed Cookie header carries no token
            cookies = SimpleCookie()
        scheme, _, value = headers.get("authorization", "").partition(" ")
        given = [query.get(TOKEN_PARAMETER), cookies[self.cookie].value if self.cookie in cookies else None,
                 value.strip() if scheme.lower() in ("token", "bearer") else None]
        return any(g is not None and secrets.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def _login(self, scope: Scope, send: Send, query: dict[str, str]) -> None:
        """The tokened address: set the cookie, then send the browser to the same address without the token (it
        stays out of the history and of Referer headers)."""
        rest = urlencode({k: v for k, v in query.items() if k != TOKEN_PARAMETER})
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
                                (b"content-length", b"0"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """JSON ``{"error": message}`` for the API (the page shows it), plain text elsewhere (a person reads it)."""
    if scope["path"].startswith("/api/"):
        body, kind = json.dumps({"error": message}).encode(), b"application/json"
    else:
        body, kind = (message + "\n").encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
