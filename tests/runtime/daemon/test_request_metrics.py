"""The hot-path metrics (runtime.daemon.request_metrics) expose what prometheus_client's own
Histogram, Counter and Summary exposed for the same observations: the same series, labels,
buckets, counts and sums, so that dashboards and alerts read them as before."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dynworkers.runtime.daemon.prometheus import (
    BOOT_BUCKETS,
    CODES,
    DISPATCH_BUCKETS,
    STEP_BUCKETS,
    STEP_OUTCOMES,
)
from dynworkers.runtime.daemon.request_metrics import RequestMetrics

#: (seconds, status, tenant, error) as the front door reports them; edges of buckets included
ANSWERS = [
    (0.0002, 200, "acme", None),
    (0.00025, 200, "acme", None),  # exactly a bound: counted in that bucket (le)
    (0.003, 404, None, "UnknownTenant"),
    (0.5, 500, "acme", "TenantError"),
    (61.0, 504, "slow", "DeadlineExceeded"),  # past the last bound: +Inf only
    (0.01, 404, "ghost", "UnknownTenant"),  # a name that is no tenant: totals only
    (0.02, 302, "acme", None),
    (0.04, 99, "acme", None),  # no status class: "other"
]


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _reference(registry: CollectorRegistry) -> None:
    """The same observations through prometheus_client's classes, as the daemon made them."""
    dispatch = Histogram(
        "dynworkers_dispatch_seconds", "d", ["code"], registry=registry, buckets=DISPATCH_BUCKETS
    )
    requests = Counter("dynworkers_requests", "r", ["code"], registry=registry)
    tenant_requests = Counter(
        "dynworkers_tenant_requests", "t", ["tenant", "code"], registry=registry
    )
    tenant_errors = Counter("dynworkers_tenant_errors", "e", ["tenant", "error"], registry=registry)
    seconds = Summary("dynworkers_tenant_request_seconds", "s", ["tenant"], registry=registry)
    boot = Histogram(
        "dynworkers_boot_latency_seconds", "b", ["start"], registry=registry, buckets=BOOT_BUCKETS
    )
    steps = Histogram(
        "dynworkers_workflow_step_seconds",
        "w",
        ["outcome"],
        registry=registry,
        buckets=STEP_BUCKETS,
    )
    for code in CODES:
        dispatch.labels(code=code)
        requests.labels(code=code)
    for outcome in STEP_OUTCOMES:
        steps.labels(outcome=outcome)
    boot.labels(start="cold").observe(0.0009)
    boot.labels(start="warm").observe(0.0001)
    steps.labels(outcome="complete").observe(0.002)
    for took, status, tenant, error in ANSWERS:
        code = f"{status // 100}xx" if 100 <= status <= 599 else "other"
        dispatch.labels(code=code).observe(took)
        requests.labels(code=code).inc()
        if tenant is None or error == "UnknownTenant":
            continue
        tenant_requests.labels(tenant=tenant, code=code).inc()
        seconds.labels(tenant=tenant).observe(took)
        if error is not None:
            tenant_errors.labels(tenant=tenant, error=error).inc()


def test_the_same_series_and_values_as_prometheus_clients_classes() -> None:
    reference = CollectorRegistry()
    _reference(reference)
    live = RequestMetrics(CODES, DISPATCH_BUCKETS, BOOT_BUCKETS, STEP_BUCKETS, STEP_OUTCOMES)
    live.cold.observe(0.0009)
    live.warm.observe(0.0001)
    live.steps.child("complete").observe(0.002)
    for answer in ANSWERS:
        live.observe_dispatch(*answer)
    ours = CollectorRegistry()
    ours.register(live)
    expected = {s for s in _samples(reference) if not s[0].endswith("_created")}
    assert _samples(ours) == expected
    text = generate_latest(ours).decode()
    assert 'dynworkers_dispatch_seconds_bucket{code="2xx",le="0.00025"} 2.0' in text
    assert 'dynworkers_requests_total{code="other"} 1.0' in text
    assert 'tenant="ghost"' not in text
