"""The dashboard at /_/ui, from a real daemon: its routes over HTTP, and the page in a real browser.

The browser is Debian's Chromium (/usr/bin/chromium) driven by the `playwright` package; no
browser is downloaded. Without either, the browser test is skipped with the reason, except under
`CI=true`, where it fails: CI must run it (`.ci/run` installs Chromium). Its screenshot is kept
under tests/artifacts/ (ignored by git) and its path printed; it is not compared with anything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.daemon.support import SOURCE_ROOT, DaemonProcess, http, write_tenant
from tests.tenants import daemon as programs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = SOURCE_ROOT / "tests" / "artifacts"
TOKEN = "dash-s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def sync_playwright() -> Any:
    """playwright's entry point, or skip (fail under CI=true) saying what is missing."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium"
    else:
        try:
            from playwright.sync_api import sync_playwright as entry
        except ImportError:
            reason = "the playwright package is missing: pip install -e '.[test]'"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return entry


def start_waiting(daemon: DaemonProcess, instance: str) -> None:
    """An instance of the napper tenant that naps 1 ms, logs, then waits for a "go" event."""
    created = daemon.api(
        "POST",
        "/_/tenants/napper/workflows",
        {"id": instance, "params": {"n": 41, "nap": 1, "wait": True}},
        headers=BEARER,
    )
    assert created.status == 201, created
    deadline = time.monotonic() + 30
    while True:
        answer = daemon.api("GET", f"/_/tenants/napper/workflows/{instance}", headers=BEARER)
        if answer.json()["status"] == "waiting":
            return
        assert time.monotonic() < deadline, f"{instance} never waited: {answer}"
        time.sleep(0.05)


def test_the_page_files_need_no_token_and_its_data_does(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, control_token=TOKEN)
    write_tenant(daemon.tenants, "napper", main=programs.NAPPER)
    daemon.start()
    try:
        page = daemon.api("GET", "/_/ui")
        assert page.status == 200, page
        assert page.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert b"/_/ui/app.js" in page.body
        for name in ("app.js", "app.css", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/LICENSE"):
            assert daemon.api("GET", f"/_/ui/{name}").status == 200, name
        for outside in ("../control.py", "nope.js", "%2e%2e/control.py"):
            assert daemon.api("GET", f"/_/ui/{outside}").status == 404, outside
        assert daemon.api("POST", "/_/ui").status == 401  # only reading the files is public
        assert daemon.api("GET", "/_/ui/auth").json() == {"token_required": True}

        assert daemon.api("GET", "/_/hot-paths").status == 401
        start_waiting(daemon, "h1")
        hot = daemon.api("GET", "/_/hot-paths?minutes=5&tenant=napper", headers=BEARER)
        assert hot.status == 200, hot
        names = {row["name"] for row in hot.json()["rows"]}
        assert {"wake.cold", "due_to_running_ms"} <= names, names
        assert all(row["tenant"] == "napper" for row in hot.json()["rows"])
        assert set(hot.json()["recent"]) == {"boot_ms", "due_to_running_ms"}
        summed = daemon.api("GET", "/_/hot-paths", headers=BEARER).json()["rows"]
        assert summed and all(row["tenant"] is None for row in summed), summed
        bad = daemon.api("GET", "/_/hot-paths?minutes=0", headers=BEARER)
        assert bad.status == 400 and "minutes" in bad.json()["message"], bad

        daemon.get("/napper/")  # a request keeps a sandbox for the tenant
        stats = daemon.api("GET", "/_/stats", headers=BEARER).json()
        assert stats["tenants"]["napper"]["memory_bytes"] > 0, stats["tenants"]
    finally:
        assert daemon.stop() == 0


@pytest.mark.timeout(240)
def test_send_event_in_the_browser_takes_an_instance_from_waiting_to_complete(
    tmp_path: Path,
) -> None:
    entry = sync_playwright()
    daemon = DaemonProcess(tmp_path, control_token=TOKEN)
    write_tenant(daemon.tenants, "napper", main=programs.NAPPER)
    daemon.start()
    try:
        start_waiting(daemon, "order-7")
        shot = ARTIFACTS / "dashboard-send-event.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with entry() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                page.set_default_timeout(30_000)
                problems: list[str] = []
                page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                page.on(
                    "console",
                    lambda msg: (
                        problems.append(f"console: {msg.text}") if msg.type == "error" else None
                    ),
                )
                urls: list[str] = []
                page.on("request", lambda request: urls.append(request.url))

                page.goto(daemon.control + "/_/ui")
                page.locator("#login").wait_for(state="visible")
                page.fill("#token", TOKEN)
                page.click("#login-form button[type=submit]")
                page.locator("#tenants tr[data-tenant=napper]").wait_for()

                page.click("#instances tr[data-instance=order-7]")
                page.locator("#instance-status [data-status=waiting]").wait_for()
                page.locator("#instance .lane[data-step=first] .bar.complete").wait_for()
                event_type = page.locator("#event-form input[name=type]")
                assert event_type.input_value() == "go"  # the type the instance waits for
                page.fill("#event-form input[name=payload]", '{"approved": true}')
                page.click("#event-form button[data-op=event]")
                page.locator("#instance-status [data-status=complete]").wait_for()
                assert '"approved": true' in page.locator("#instance .output").inner_text()
                assert page.locator("#instance tr[data-kind=event]").count() == 1

                page.select_option("#log-tenant", "napper")
                page.click("#log-toggle")
                page.locator("#log", has_text="woke up after the nap").wait_for()
                page.locator("[data-chart=Wake-ups] canvas").first.wait_for()

                page.screenshot(path=str(shot), full_page=True)
                print(f"dashboard screenshot: {shot}")
                assert not problems, problems
                assert not [url for url in urls if TOKEN in url], "the token went into a URL"
            finally:
                browser.close()
        assert shot.stat().st_size > 0
        final = http("GET", daemon.control + "/_/tenants/napper/workflows/order-7", headers=BEARER)
        assert final.json()["output"] == {"first": 42, "go": {"approved": True}}, final
    finally:
        assert daemon.stop() == 0
