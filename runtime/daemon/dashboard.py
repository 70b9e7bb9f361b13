"""The dashboard: a web page at /_/ui on the control listener, and the one route only it needs.

Host side, handlers on the daemon's event loop, added to the control API's application (the
control listener, never the tenant front door). The page is static files in `runtime/daemon/ui/`
(shipped in the wheel as package data; no build step): `index.html`, `app.js`, `app.css`, and
uPlot for the charts, vendored with its licence under `ui/vendor/uplot/`. The page reads the
control API the CLI reads:

    GET  /_/ui, /_/ui/<file>                  the page and its files
    GET  /_/ui/auth                           {"token_required": bool}, so that the page knows
                                              whether to ask for the token
    GET  /_/hot-paths?minutes=N&tenant=T      the engine's per-minute hot-path history

The token rule. The page's files are public: they are the same on every daemon, hold no data
and are what the wheel ships, so the control token's guard lets GET /_/ui and /_/ui/<file>
through (`is_public`). Everything the page shows comes from routes behind the token. With a
`control_token` set, the page asks for it in a form, keeps it in the tab's `sessionStorage`
(gone when the tab closes) and sends it as `Authorization: Bearer <token>` on each request. It is
never put in a URL (which would land in history, proxy logs and Referer headers) nor in a cookie
(which the browser would attach by itself, opening the API to cross-site requests). The live log
is read with `fetch()` and a streaming reader rather than `EventSource`, which cannot send that
header. Each file is answered with a Content-Security-Policy that allows scripts, styles and
requests to this origin only (no inline script, no framing) and no Referer.

Failures: a file name outside the page's own files is 404; a bad query is 400 naming it; a store
that cannot be read is the control API's 503 (its guard maps `StoreError`).
"""

from __future__ import annotations

import contextlib
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from dynworkers.runtime.daemon.front import error

if TYPE_CHECKING:
    from dynworkers.runtime.daemon.server import Daemon
    from dynworkers.runtime.supervisor import Supervisor

UI_DIR = Path(__file__).resolve().parent / "ui"
PREFIX = "/_/ui"
#: history the hot-paths route reads by default, and at most (one week)
DEFAULT_MINUTES, MAX_MINUTES = 60, 7 * 24 * 60
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_public(request: web.Request) -> bool:
    """Whether the request is for the page's own files, which need no token (see above)."""
    path = request.path
    return request.method in ("GET", "HEAD") and (path == PREFIX or path.startswith(PREFIX + "/"))


def add_memory(stats: dict[str, Any], supervisor: Supervisor) -> None:
    """Put `memory_bytes`, the resident bytes of its sandboxes together, in each tenant's entry
    of `stats["tenants"]` (a sandbox that just exited counts 0)."""
    for tenant, entry in stats.get("tenants", {}).items():
        used = 0
        for pid in supervisor.sandbox_pids(tenant):
            with contextlib.suppress(psutil.Error, OSError):
                used += psutil.Process(pid).memory_info().rss
        entry["memory_bytes"] = used


def page_files(root: Path = UI_DIR) -> dict[str, Path]:
    """The files the page may be served from, by their path under /_/ui/ (nothing else is)."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _summed_over_tenants(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sums: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        cell = sums.setdefault((row["minute"], row["name"]), [0.0, 0.0])
        cell[0] += row["count"]
        cell[1] += row["total"]
    return [
        {"tenant": None, "minute": minute, "name": name, "count": count, "total": total}
        for (minute, name), (count, total) in sorted(sums.items())
    ]


class Dashboard:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.files = page_files()
        self._cache: dict[str, bytes] = {}

    def add_routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("GET", PREFIX, self.page)
        add("GET", PREFIX + "/", self.page)
        add("GET", PREFIX + "/auth", self.auth)  # before the files' catch-all
        add("GET", PREFIX + "/{name:.+}", self.page)
        add("GET", "/_/hot-paths", self.hot_paths)

    async def page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        path = self.files.get(name)
        if path is None:
            return error(404, "NotFound", f"the dashboard has no file {name!r}; open {PREFIX}")
        body = self._cache.get(name)
        if body is None:  # small files, read once: the package does not change under us
            body = self._cache[name] = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or (
            "application/octet-stream" if path.suffix else "text/plain"  # LICENSE
        )
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return web.Response(body=body, headers={"Content-Type": content_type, **SECURITY_HEADERS})

    async def auth(self, request: web.Request) -> web.Response:
        required = bool(self.daemon.config.control_token)
        return web.json_response({"token_required": required}, headers=SECURITY_HEADERS)

    async def hot_paths(self, request: web.Request) -> web.Response:
        """Per minute: wake.cold, wake.warm, boot_ms, due_to_running_ms and evict.<reason>, each a
        count and a total (a mean is total / count), durable across restarts; one tenant's with
        `tenant`, else summed over every tenant (`"tenant": null`). `recent` holds the
        percentiles of the latest samples, kept in memory: the history has no percentiles."""
        raw = request.query.get("minutes", str(DEFAULT_MINUTES))
        try:
            minutes = int(raw)
        except ValueError:
            minutes = -1
        if not 1 <= minutes <= MAX_MINUTES:
            return error(
                400,
                "BadRequest",
                f"query parameter minutes={raw!r} must be an integer within 1..{MAX_MINUTES}",
            )
        tenant = request.query.get("tenant") or None
        engine = self.daemon.engine
        now = engine.clock.now()
        since = int(now // 60) - minutes + 1
        rows = await engine.hot_paths(since)
        if tenant is not None:
            rows = [row for row in rows if row["tenant"] == tenant]
        else:
            rows = _summed_over_tenants(rows)
        return web.json_response(
            {
                "now": now,
                "since_minute": since,
                "minutes": minutes,
                "tenant": tenant,
                "rows": rows,
                "recent": engine.hotpath.snapshot(),
            }
        )
