"""`dynworkers serve` as a real subprocess on ports the OS picked: routing, the control API,
metrics, the log stream and every bad input, on one daemon shared by this module's tests."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SHARED_DAEMONS
from tests.runtime.daemon.support import EXAMPLES, DaemonProcess, write_tenant
from tests.tenants import daemon as programs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("served")
    tenants = root / "tenants"
    shutil.copytree(EXAMPLES / "counter", tenants / "counter")
    write_tenant(tenants, "echo", main=programs.ECHO)
    write_tenant(tenants, "boom", main=programs.BOOM)
    write_tenant(tenants, "spin", main=programs.SPIN)
    write_tenant(tenants, "broken", main=programs.BROKEN)
    write_tenant(tenants, "napper", main=programs.NAPPER)
    # expose_errors: the tests below read tenant tracebacks and compile errors from answers
    daemon = DaemonProcess(
        root, tenants, deadline=2.0, max_body_bytes=4096, domain="test.local", expose_errors=1
    )
    daemon.start()
    SHARED_DAEMONS.add(daemon.pid)
    try:
        yield daemon
    finally:
        SHARED_DAEMONS.discard(daemon.pid)
        assert daemon.stop() == 0


# --- routing -------------------------------------------------------------------------------------


def test_a_path_reaches_its_tenant_which_sees_itself_at_the_root(served: DaemonProcess) -> None:
    answer = served.post("/echo/a/b?x=1", "hello", headers={"X-Test": "yes"})
    assert answer.status == 200, answer
    echoed = answer.json()
    assert echoed["url"].endswith("/a/b?x=1") and "/echo/" not in echoed["url"]
    assert (echoed["method"], echoed["body"], echoed["test_header"]) == ("POST", "hello", "yes")
    assert echoed["prefix"] == "/echo"
    assert served.get("/echo").json()["url"].endswith("/")


def test_the_host_header_routes_to_a_tenant_with_the_whole_path(served: DaemonProcess) -> None:
    echoed = served.get("/a/b", headers={"Host": "echo.test.local"}).json()
    assert echoed["url"] == "http://echo.test.local/a/b"
    assert echoed["prefix"] == ""


def test_state_lives_in_the_tenants_kv_across_requests(served: DaemonProcess) -> None:
    first = served.get("/counter/").json()["hits"]
    assert served.get("/counter/").json()["hits"] == first + 1


def test_tenant_requests_can_never_reach_the_control_api(served: DaemonProcess) -> None:
    for path in ("/_/tenants", "/_/stats", "/healthz", "/metrics", "/_/tenants/echo/logs"):
        answer = served.get(path)
        assert answer.status == 404, (path, answer)
        assert answer.json()["error"] == "UnknownTenant"


# --- bad input -----------------------------------------------------------------------------------


def test_an_unknown_tenant_is_404_saying_so(served: DaemonProcess) -> None:
    answer = served.get("/nobody/here")
    assert answer.status == 404
    assert "no tenant 'nobody' is deployed" in answer.json()["message"]
    assert served.get("/Not_A_Tenant/").status == 404


def test_a_body_over_the_limit_is_413_and_the_tenant_still_answers(served: DaemonProcess) -> None:
    answer = served.post("/echo/", b"x" * 5000)
    assert answer.status == 413
    assert "4096 bytes" in answer.json()["message"]
    assert served.post("/echo/", b"x" * 4000).status == 200


def test_code_that_does_not_compile_is_500_with_every_error(served: DaemonProcess) -> None:
    answer = served.get("/broken/")
    assert answer.status == 500
    body = answer.json()
    assert body["error"] == "CompileError"
    lines = {(problem["module"], problem["line"]) for problem in body["errors"]}
    assert {("main", 4), ("main", 7)} <= lines, body


def test_a_tenant_exception_is_500_with_its_own_traceback_only(served: DaemonProcess) -> None:
    answer = served.get("/boom/")
    assert answer.status == 500
    body = answer.json()
    assert (body["error"], body["message"]) == ("ValueError", "boom from tenant code")
    trace = "\n".join(body["traceback"])
    assert "explode" in trace and "main" in trace
    for host_part in ("runtime/", "site-packages", "loader/", "aiohttp"):
        assert host_part not in trace


def test_a_deadline_is_504_and_only_that_tenant_is_disturbed(served: DaemonProcess) -> None:
    results: dict[str, Any] = {}
    spinning = threading.Thread(target=lambda: results.update(spin=served.get("/spin/spin")))
    spinning.start()
    assert served.get("/echo/meanwhile").status == 200  # another tenant, while spin spins
    spinning.join()
    assert results["spin"].status == 504
    assert results["spin"].json()["error"] == "DeadlineExceeded"
    assert served.get("/spin/").status == 200  # rehydrated in a fresh sandbox


def test_bad_input_loses_no_workflow(served: DaemonProcess) -> None:
    created = served.post("/napper/", {"n": 41, "nap": "1 second", "wait": True}).json()
    for path, body in (("/broken/", None), ("/boom/", None), ("/echo/", b"x" * 5000)):
        served.post(path, body)
    served.get("/spin/spin")
    served.api("POST", "/_/tenants/napper/workflows", b"{not json")
    served.wait_for("napper", created["id"], "waiting")
    sent = served.api(
        "POST", f"/_/tenants/napper/workflows/{created['id']}/events", {"type": "go", "payload": 7}
    )
    assert sent.status == 200, sent
    done = served.wait_for("napper", created["id"], "complete", "errored")
    assert done["output"] == {"first": 42, "go": 7}


# --- control API ---------------------------------------------------------------------------------


def test_put_deploys_a_version_and_a_compile_error_keeps_the_old_one(
    served: DaemonProcess,
) -> None:
    put = served.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_ONE}})
    assert put.status == 201, put
    first = put.json()["version"]
    assert served.get("/pushed/").body == b"version one"
    again = served.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_ONE}})
    assert again.status == 200 and again.json()["changed"] is False
    refused = served.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.BROKEN}})
    assert refused.status == 422
    assert {p["line"] for p in refused.json()["errors"]} >= {4, 7}
    assert served.get("/pushed/").body == b"version one"
    second = served.api("PUT", "/_/tenants/pushed", {"modules": {"main": programs.VERSION_TWO}})
    assert second.status == 201
    assert served.get("/pushed/").body == b"version two"
    history = served.api("GET", "/_/tenants/pushed").json()
    assert [d["version"] for d in history["deployments"]] == [first, second.json()["version"]]
    listed = {t["tenant"]: t for t in served.api("GET", "/_/tenants").json()["tenants"]}
    assert listed["pushed"]["version"] == second.json()["version"]
    assert listed["broken"]["compiles"] is False and listed["echo"]["compiles"] is True


def test_malformed_control_requests_are_400_naming_the_problem(served: DaemonProcess) -> None:
    cases = [
        ("PUT", "/_/tenants/x1", b"{not json", "not valid JSON"),
        ("PUT", "/_/tenants/x1", b"[1, 2]", "must be a JSON object"),
        ("PUT", "/_/tenants/x1", {"modules": "main"}, '"modules" must map'),
        ("PUT", "/_/tenants/x1", {"modules": {"main": "x = 1"}, "extra": 1}, "unknown field"),
        ("POST", "/_/tenants/napper/workflows", b"\xff\xfe", "not UTF-8"),
        ("POST", "/_/tenants/napper/workflows", {"params": 1, "bogus": 2}, "unknown field"),
        ("POST", "/_/tenants/napper/workflows", {"id": "bad id!"}, "id"),
        ("GET", "/_/tenants/napper/workflows?limit=x", None, "limit"),
    ]
    for method, path, body, words in cases:
        answer = served.api(method, path, body)
        assert answer.status == 400, (path, body, answer)
        assert words in answer.json()["message"], (words, answer)
    assert served.api("PUT", "/_/tenants/Bad_Id", {"modules": {"main": ""}}).status == 404
    assert served.api("GET", "/_/tenants/nobody/workflows").status == 404
    assert served.api("GET", "/_/tenants/napper/workflows/nope").status == 404
    assert served.api("GET", "/_/nothing").status == 404


def test_workflow_instances_through_the_control_api(served: DaemonProcess) -> None:
    base = "/_/tenants/napper/workflows"
    created = served.api("POST", base, {"id": "ctl-1", "params": {"n": 1, "wait": True}})
    assert created.status == 201 and created.json()["id"] == "ctl-1"
    assert served.api("POST", base, {"id": "ctl-1", "params": {}}).status == 409
    served.wait_for("napper", "ctl-1", "waiting")
    listed = served.api("GET", base).json()["instances"]
    assert "ctl-1" in {i["id"] for i in listed}
    assert served.api("POST", f"{base}/ctl-1/pause").json()["status"] == "paused"
    assert served.api("POST", f"{base}/ctl-1/resume").status == 200
    assert served.api("POST", f"{base}/ctl-1/events", {"payload": 1}).status == 400
    served.api("POST", f"{base}/ctl-1/events", {"type": "go", "payload": "yes"})
    assert served.wait_for("napper", "ctl-1", "complete")["output"] == {"first": 2, "go": "yes"}
    assert served.api("POST", f"{base}/ctl-1/resume").status == 409
    restarted = served.api("POST", f"{base}/ctl-1/restart", {"from_step": "nap"})
    assert restarted.status == 200, restarted
    served.wait_for("napper", "ctl-1", "waiting")
    assert served.api("POST", f"{base}/ctl-1/terminate").json()["status"] == "terminated"
    assert served.api("POST", f"{base}/ctl-1/explode").status == 404
    # Another tenant's API sees none of napper's instances.
    assert served.api("GET", "/_/tenants/echo/workflows/ctl-1").status == 404


def test_stats_and_health(served: DaemonProcess) -> None:
    stats = served.api("GET", "/_/stats").json()
    assert {"pool", "workflows", "loader", "evictions", "daemon"} <= set(stats)
    assert served.api("GET", "/healthz").json() == {"status": "ok"}


def test_metrics_are_prometheus_text_with_the_promised_names(served: DaemonProcess) -> None:
    served.get("/counter/")
    served.get("/spin/spin")  # a deadline eviction
    answer = served.api("GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    for name in (
        "dynworkers_boot_latency_seconds",
        "dynworkers_dispatch_seconds",
        "dynworkers_evictions",
        "dynworkers_rehydrations",
        "dynworkers_pool_sandboxes",
        "dynworkers_pool_spares",
        "dynworkers_tenant_memory_bytes",
        "dynworkers_workflow_instances",
        "dynworkers_workflow_step_seconds",
    ):
        assert name in families, (name, sorted(families))
    starts = {s.labels.get("start") for s in families["dynworkers_boot_latency_seconds"].samples}
    assert {"cold", "warm"} <= starts
    evictions = {s.labels["reason"]: s.value for s in families["dynworkers_evictions"].samples}
    assert evictions["deadline"] >= 1
    memory = {s.labels["tenant"] for s in families["dynworkers_tenant_memory_bytes"].samples}
    assert "counter" in memory
    statuses = {s.labels["status"] for s in families["dynworkers_workflow_instances"].samples}
    assert {"complete", "waiting", "errored"} <= statuses
    # per tenant: requests, errors by kind, latency; the daemon's process; its build
    requests = families["dynworkers_tenant_requests"].samples
    assert {(s.labels["tenant"], s.labels["code"]) for s in requests} >= {
        ("counter", "2xx"),
        ("spin", "5xx"),
    }
    errors = {
        (s.labels["tenant"], s.labels["error"])
        for s in families["dynworkers_tenant_errors"].samples
    }
    assert ("spin", "DeadlineExceeded") in errors
    latency = {
        s.name: s.value
        for s in families["dynworkers_tenant_request_seconds"].samples
        if s.labels["tenant"] == "counter"
    }
    assert latency["dynworkers_tenant_request_seconds_count"] >= 1
    assert latency["dynworkers_tenant_request_seconds_sum"] > 0
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value > 0
    assert "python_info" in families
    (build,) = families["dynworkers_build_info"].samples
    assert build.labels["version"] and build.labels["python"].count(".") == 2
    assert not [line for line in answer.body.decode().splitlines() if "_created" in line]
    served.get("/no-such-tenant-here/")  # a name that is no tenant makes no series
    after = served.api("GET", "/metrics").body.decode()
    assert "no-such-tenant-here" not in after


# --- logs ----------------------------------------------------------------------------------------


def _read_events(url: str, count: int) -> list[dict[str, Any]]:
    lines = []
    with urllib.request.urlopen(url, timeout=30) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        for raw in stream:
            text = raw.decode().strip()
            if text.startswith("data:"):
                lines.append(json.loads(text[5:]))
                if len(lines) == count:
                    return lines
    return lines


def test_the_log_stream_carries_a_tenants_own_lines_only(served: DaemonProcess) -> None:
    served.get("/boom/")
    served.get("/echo/logged-before")
    url = served.control + "/_/tenants/echo/logs?tail=1&follow=1"
    found: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: found.extend(_read_events(url, 3)))
    reader.start()
    served.get("/counter/")  # another tenant's console.log
    for n in range(40):  # until the reader has subscribed and seen two live lines
        served.get(f"/echo/live-{n}")
        reader.join(0.1)
        if not reader.is_alive():
            break
    reader.join(30)
    assert len(found) == 3, found
    assert {line["tenant"] for line in found} == {"echo"}
    assert "logged-before" in found[0]["message"]
    assert all(isinstance(line["ts"], float) and line["level"] for line in found)
    errors = _read_events(served.control + "/_/tenants/boom/logs?tail=1", 1)
    assert errors[0]["level"] == "error" and "boom from tenant code" in errors[0]["message"]


def test_the_log_stream_follows_only_when_asked_as_the_cli_does_and_resumes_by_id(
    served: DaemonProcess,
) -> None:
    for n in range(3):
        served.get(f"/echo/resume-{n}")
    url = served.control + "/_/tenants/echo/logs?tail=3"
    with urllib.request.urlopen(url, timeout=30) as stream:  # no follow: the backlog, then EOF
        events = stream.read().decode().strip().split("\n\n")
    ids = [int(event.split("\n")[0].removeprefix("id: ")) for event in events]
    assert len(ids) == 3 and ids == sorted(ids)
    request = urllib.request.Request(url, headers={"Last-Event-ID": str(ids[0])})
    with urllib.request.urlopen(request, timeout=30) as stream:
        resumed = stream.read().decode().strip().split("\n\n")
    assert resumed == events[1:]
    bad = served.api("GET", "/_/tenants/echo/logs", headers={"Last-Event-ID": "soon"})
    assert bad.status == 400 and "Last-Event-ID" in bad.json()["message"]


def test_the_log_of_an_unknown_tenant_is_404(served: DaemonProcess) -> None:
    assert served.api("GET", "/_/tenants/nobody/logs").status == 404
