"""The control API's Python client, blocking (`ControlClient`) and asynchronous
(`AsyncControlClient`); the CLI uses the blocking one.

Host side, in the caller's thread (the blocking client: urllib from the standard library, no event
loop) or on the caller's event loop (the asynchronous one: aiohttp). Both offer the same methods,
named after the routes (`deploy`, `tenants`, `delete_tenant`, `create`, `status`, `send_event`,
`pause`, ...); every answer is the route's decoded JSON.

Finding the daemon (`ControlClient.discover()`, what the CLI does): an explicit URL, else
`DYNWORKERS_URL`, else the control address in `<state_dir>/daemon.json` written by a live daemon
(so a daemon started on port 0 is found), else `control_host:control_port` from the config. The
token: an explicit one, else `control_token` from the config (DYNWORKERS_CONTROL_TOKEN or the
config file); `token_source` says which, so that a refusal can say where the token came from.

Failures are `ControlError` (a `DynworkersError`), by kind; each carries `status` (0 when no HTTP
answer came), the daemon's JSON `answer`, and the CLI's `exit_code`:

    ControlError                                        exit 1: the daemon refused (409, 500)
    ├── ControlInvalid(ValueError)                      exit 2: 400, 413, 422: fix the input
    ├── ControlNotFound(LookupError)                    exit 3: 404: no such tenant or instance
    ├── ControlUnavailable(ConnectionError)             exit 4: no daemon answers, 503, 408
    └── ControlUnauthorized(PermissionError)            exit 5: 401: the token was refused
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from dynworkers.runtime.errors import DynworkersError

#: the environment variable naming the control API's URL, read by `discover()` and the CLI
URL_VARIABLE = "DYNWORKERS_URL"


class ControlError(DynworkersError):
    """The control API refused a request, or could not be reached; the message says why."""

    kind = "refused"
    exit_code = 1

    def __init__(self, message: str, status: int = 0, answer: dict[str, Any] | None = None):
        self.status = status
        self.answer = answer or {}
        super().__init__(message)

    def as_json(self) -> dict[str, Any]:
        """The error as the CLI prints it under --json."""
        return {
            **self.answer,
            "error": self.answer.get("error", type(self).__name__),
            "message": str(self),
            "kind": self.kind,
            "status": self.status,
        }


class ControlInvalid(ControlError, ValueError):
    kind, exit_code = "invalid", 2


class ControlNotFound(ControlError, LookupError):
    kind, exit_code = "not_found", 3


class ControlUnavailable(ControlError, ConnectionError):
    kind, exit_code = "unavailable", 4


class ControlUnauthorized(ControlError, PermissionError):
    kind, exit_code = "unauthorized", 5


def error_for(status: int, answer: dict[str, Any], message: str) -> ControlError:
    """The `ControlError` subclass for an HTTP status."""
    if status in (400, 413, 422):
        return ControlInvalid(message, status, answer)
    if status == 404:
        return ControlNotFound(message, status, answer)
    if status in (408, 502, 503, 504):
        return ControlUnavailable(message, status, answer)
    if status == 401:
        return ControlUnauthorized(message, status, answer)
    return ControlError(message, status, answer)


def _live_daemon_url(state_dir: Path) -> str | None:
    """The control URL in `daemon.json`, if the daemon whose pid it holds is alive."""
    try:
        where = json.loads((state_dir / "daemon.json").read_text())
        pid, url = int(where["pid"]), str(where["control"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a daemon that was killed
    except PermissionError:
        pass  # alive, another user's
    return url


def discover(
    url: str | None = None, token: str | None = None, config: str | None = None
) -> tuple[str, str, str]:
    """(url, token, where the token came from), as the CLI finds them (see the module doc)."""
    from dynworkers.runtime.daemon.config import CONFIG_VARIABLE, load_config

    settings = load_config(config)
    if not url:
        url = os.environ.get(URL_VARIABLE) or _live_daemon_url(Path(settings.state_dir))
    if not url:
        url = f"http://{settings.control_host}:{settings.control_port}"
    if token is not None:
        return url, token, "--token"
    token = settings.control_token
    if os.environ.get("DYNWORKERS_CONTROL_TOKEN"):
        source = "DYNWORKERS_CONTROL_TOKEN"
    elif token:
        source = config or os.environ.get(CONFIG_VARIABLE) or "dynworkers.toml"
        source = f"control_token in {source}"
    else:
        source = "none: no --token, DYNWORKERS_CONTROL_TOKEN or control_token in a config"
    return url, token, source


R = TypeVar("R")


class _Routes(Generic[R]):
    """The control API's routes as methods; `call` sends one request (blocking or awaitable)."""

    def __init__(
        self, url: str, token: str = "", timeout: float = 30.0, token_source: str = ""
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_source = token_source or ("the token given" if token else "no token")

    def call(self, method: str, path: str, body: Any = None) -> R:
        raise NotImplementedError

    def _headers(self, body: Any) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _failure(self, status: int, answer: Any, reason: str) -> ControlError:
        answer = answer if isinstance(answer, dict) else {}
        message = str(answer.get("message") or f"HTTP {status} {reason}")
        if status == 401:
            given = "was refused" if self.token else "is needed and none was sent"
            message = (
                f"the daemon at {self.url} says its control token {given} (token from "
                f"{self.token_source}): pass --token, or set DYNWORKERS_CONTROL_TOKEN or "
                "control_token to the daemon's"
            )
        return error_for(status, answer, message)

    def _unreachable(self, reason: object) -> ControlUnavailable:
        return ControlUnavailable(
            f"no daemon answers at {self.url} ({reason}): start one with `dynworkers serve`, "
            f"or point --url (or {URL_VARIABLE}) at it"
        )

    # --- the daemon ------------------------------------------------------------------------------

    def stats(self) -> R:
        return self.call("GET", "/_/stats")

    def ready(self) -> R:
        return self.call("GET", "/readyz")

    # --- tenants ---------------------------------------------------------------------------------

    def tenants(self) -> R:
        return self.call("GET", "/_/tenants")

    def deploy(self, tenant: str, modules: dict[str, str], main_module: str | None = None) -> R:
        body: dict[str, Any] = {"modules": modules}
        if main_module:
            body["main_module"] = main_module
        return self.call("PUT", _tenant(tenant), body)

    def tenant(self, tenant: str) -> R:
        """The tenant's deployment history and current version."""
        return self.call("GET", _tenant(tenant))

    def delete_tenant(self, tenant: str) -> R:
        return self.call("DELETE", _tenant(tenant))

    # --- workflows -------------------------------------------------------------------------------

    def instances(self, tenant: str, status: str | None = None, limit: int = 100) -> R:
        query = {"limit": limit, **({"status": status} if status else {})}
        return self.call("GET", f"{_tenant(tenant)}/workflows?{urlencode(query)}")

    def create(self, tenant: str, params: Any = None, id: str | None = None) -> R:
        return self.call("POST", f"{_tenant(tenant)}/workflows", {"id": id, "params": params})

    def status(self, tenant: str, id: str) -> R:
        return self.call("GET", _instance(tenant, id))

    def send_event(self, tenant: str, id: str, type: str, payload: Any = None) -> R:
        body = {"type": type, "payload": payload}
        return self.call("POST", f"{_instance(tenant, id)}/events", body)

    def pause(self, tenant: str, id: str) -> R:
        return self.call("POST", f"{_instance(tenant, id)}/pause")

    def resume(self, tenant: str, id: str) -> R:
        return self.call("POST", f"{_instance(tenant, id)}/resume")

    def terminate(self, tenant: str, id: str) -> R:
        return self.call("POST", f"{_instance(tenant, id)}/terminate")

    def restart(self, tenant: str, id: str, from_step: Any = None) -> R:
        body = {"from_step": from_step} if from_step is not None else None
        return self.call("POST", f"{_instance(tenant, id)}/restart", body)


def _tenant(tenant: str) -> str:
    return f"/_/tenants/{quote(tenant, safe='')}"


def _instance(tenant: str, id: str) -> str:
    return f"{_tenant(tenant)}/workflows/{quote(id, safe='')}"


def _logs_path(tenant: str, tail: int, follow: bool) -> str:
    return f"{_tenant(tenant)}/logs?tail={tail}&follow={int(follow)}"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return {}


class ControlClient(_Routes[Any]):
    """The blocking client: every method sends one request and returns the decoded answer."""

    @classmethod
    def discover(
        cls,
        url: str | None = None,
        token: str | None = None,
        config: str | None = None,
        timeout: float = 30.0,
    ) -> ControlClient:
        url, token, source = discover(url, token, config)
        return cls(url, token, timeout, source)

    def _request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(
            self.url + path, data=data, method=method, headers=self._headers(body)
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            with urllib.request.urlopen(
                self._request(method, path, body), timeout=self.timeout
            ) as answer:
                return _decode(answer.read())
        except urllib.error.HTTPError as exc:
            raise self._failure(exc.code, _decode(exc.read()), exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def logs(self, tenant: str, tail: int = 100, follow: bool = False) -> Iterator[dict[str, Any]]:
        """The tenant's log lines, each a dict (ts, level, message, ...), until the stream ends
        (with `follow`, until the daemon stops or the caller stops iterating)."""
        return self.events(_logs_path(tenant, tail, follow))

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """Server-sent events from `path`, each `data:` line decoded, until the stream ends."""
        try:
            answer = urllib.request.urlopen(self._request("GET", path), timeout=None)
        except urllib.error.HTTPError as exc:
            raise self._failure(exc.code, _decode(exc.read()), exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None
        with answer:
            for raw in answer:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    yield json.loads(line[5:].strip())


class AsyncControlClient(_Routes[Awaitable[Any]]):
    """The asynchronous client (aiohttp): every method is awaited. Use it as an async context
    manager, or call `close()`, to release its connections."""

    def __init__(
        self, url: str, token: str = "", timeout: float = 30.0, token_source: str = ""
    ) -> None:
        super().__init__(url, token, timeout, token_source)
        self._session: Any = None

    @classmethod
    def discover(
        cls,
        url: str | None = None,
        token: str | None = None,
        config: str | None = None,
        timeout: float = 30.0,
    ) -> AsyncControlClient:
        url, token, source = discover(url, token, config)
        return cls(url, token, timeout, source)

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def _send(self, method: str, path: str, body: Any = None) -> Any:
        import aiohttp

        data = None if body is None else json.dumps(body).encode()
        try:
            async with self._open().request(
                method, self.url + path, data=data, headers=self._headers(body)
            ) as answer:
                raw = await answer.read()
                if answer.status >= 400:
                    raise self._failure(answer.status, _decode(raw), answer.reason or "")
                return _decode(raw)
        except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    def call(self, method: str, path: str, body: Any = None) -> Awaitable[Any]:
        return self._send(method, path, body)

    async def logs(
        self, tenant: str, tail: int = 100, follow: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """The tenant's log lines, as `ControlClient.logs`."""
        import aiohttp

        session = self._open()
        try:
            async with session.get(
                self.url + _logs_path(tenant, tail, follow),
                headers=self._headers(None),
                timeout=aiohttp.ClientTimeout(total=None),
            ) as answer:
                if answer.status >= 400:
                    raise self._failure(
                        answer.status, _decode(await answer.read()), answer.reason or ""
                    )
                async for raw in answer.content:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line.startswith("data:"):
                        yield json.loads(line[5:].strip())
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise self._unreachable(exc) from None
