"""A small blocking client of the control API, for the CLI.

Host side, in the CLI's main thread (no event loop: urllib from the standard library). Answers
are decoded JSON; an HTTP error becomes `ControlError` carrying the daemon's JSON answer, and a
daemon that is not there becomes `ControlError` that says how to start one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


class ControlError(Exception):
    def __init__(self, status: int, answer: dict[str, Any], message: str) -> None:
        self.status = status
        self.answer = answer
        super().__init__(message)


class ControlClient:
    def __init__(self, url: str, token: str = "", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            with urllib.request.urlopen(
                self._request(method, path, body), timeout=self.timeout
            ) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, ConnectionError) as exc:
            raise ControlError(
                0,
                {},
                f"no daemon answers at {self.url} ({getattr(exc, 'reason', exc)}): start one "
                "with `dynworkers serve`, or point --url at it",
            ) from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """Server-sent events from `path`, each `data:` line decoded, until the stream ends."""
        try:
            answer = urllib.request.urlopen(self._request("GET", path), timeout=None)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            raise ControlError(0, {}, f"no daemon answers at {self.url} ({exc.reason})") from None
        with answer:
            for raw in answer:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    yield json.loads(line[5:].strip())


def _http_error(exc: urllib.error.HTTPError) -> ControlError:
    try:
        answer = json.loads(exc.read())
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    message = answer.get("message") or f"HTTP {exc.code} {exc.reason}"
    return ControlError(exc.code, answer, str(message))
