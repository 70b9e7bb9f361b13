"""The daemon's metrics fed on the hot path, as plain numbers folded into Prometheus at scrape.

Host side, on the daemon's event loop only; no locks. prometheus_client's own `Histogram`,
`Counter` and `Summary` take a lock and walk its label machinery on each observation, which
cost the front door about 7 us a request (issue 13's profile). Here an observation is a bucket
found by bisection and a few additions to lists and dicts; `collect()` yields the same metric
families, names, labels and buckets as those classes did, when `/metrics` is scraped
(runtime.daemon.prometheus registers this as a collector).

What is kept: dispatch latency by status class and requests by status class (the front door);
per tenant, requests by status class, errors by kind, and the count and sum of its latencies;
boot latency by start ("cold", "warm": the pool's observers); workflow step durations by
outcome (the engine's step observers).

Failures: none; an observation never raises for any float.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString


class Buckets:
    """One histogram series: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket `le` bound: value <= bound
        self.total += value


class HistogramFamily:
    """A histogram with one label, a `Buckets` per label value."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        bounds: tuple[float, ...],
        present: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = bounds
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.series = {value: Buckets(bounds) for value in present}

    def child(self, value: str) -> Buckets:
        series = self.series.get(value)
        if series is None:
            series = self.series[value] = Buckets(self.bounds)
        return series

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, series in self.series.items():
            cumulative, running = [], 0
            for le, count in zip(self._le, series.counts, strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric([value], cumulative, series.total)
        return family


#: "2xx" for 200..299, and so on; "other" outside 100..599
STATUS_CLASS = {status: f"{status // 100}xx" for status in range(100, 600)}
#: the front door's answer to a name that is no tenant: not counted per tenant
UNKNOWN_TENANT = "UnknownTenant"


class RequestMetrics:
    """The hot-path figures of one daemon (see the module docstring)."""

    def __init__(
        self,
        codes: tuple[str, ...],
        dispatch_buckets: tuple[float, ...],
        boot_buckets: tuple[float, ...],
        step_buckets: tuple[float, ...],
        step_outcomes: tuple[str, ...],
    ) -> None:
        self.dispatch = HistogramFamily(
            "dynworkers_dispatch_seconds",
            "Time to answer a tenant request at the front door, by status class.",
            "code",
            dispatch_buckets,
            codes,
        )
        self.boot = HistogramFamily(
            "dynworkers_boot_latency_seconds",
            "Time from needing a sandbox to the sandbox being ready for the tenant's call.",
            "start",
            boot_buckets,
            ("cold", "warm"),
        )
        self.steps = HistogramFamily(
            "dynworkers_workflow_step_seconds",
            "Duration of a workflow step attempt, from its start to its outcome.",
            "outcome",
            step_buckets,
            step_outcomes,
        )
        self.warm = self.boot.child("warm")
        self.cold = self.boot.child("cold")
        self.requests = dict.fromkeys(codes, 0)
        self.tenant_requests: dict[tuple[str, str], int] = {}
        self.tenant_errors: dict[tuple[str, str], int] = {}
        #: tenant -> [count, sum of seconds]
        self.tenant_seconds: dict[str, list[float]] = {}

    def observe_dispatch(
        self, seconds: float, status: int, tenant: str | None = None, error: str | None = None
    ) -> None:
        code = STATUS_CLASS.get(status, "other")
        self.dispatch.child(code).observe(seconds)
        self.requests[code] = self.requests.get(code, 0) + 1
        if tenant is None or error == UNKNOWN_TENANT:
            return
        key = (tenant, code)
        self.tenant_requests[key] = self.tenant_requests.get(key, 0) + 1
        mean = self.tenant_seconds.get(tenant)
        if mean is None:
            mean = self.tenant_seconds[tenant] = [0, 0.0]
        mean[0] += 1
        mean[1] += seconds
        if error is not None:
            key = (tenant, error)
            self.tenant_errors[key] = self.tenant_errors.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        yield self.boot.family()
        yield self.dispatch.family()
        requests = CounterMetricFamily(
            "dynworkers_requests", "Tenant requests answered, by status class.", labels=["code"]
        )
        for code, count in self.requests.items():
            requests.add_metric([code], count)
        yield requests
        yield _pairs(
            "dynworkers_tenant_requests",
            "Tenant requests answered, by tenant and status class.",
            ("tenant", "code"),
            self.tenant_requests,
        )
        yield _pairs(
            "dynworkers_tenant_errors",
            "Tenant requests that failed, by tenant and kind (TenantError: the tenant's code "
            "raised; the others are the front door's answers: DeadlineExceeded, SandboxCrashed, "
            "Busy, CompileError, ...).",
            ("tenant", "error"),
            self.tenant_errors,
        )
        seconds = SummaryMetricFamily(
            "dynworkers_tenant_request_seconds",
            "Time to answer a tenant's requests at the front door (count and sum: the mean).",
            labels=["tenant"],
        )
        for tenant, mean in self.tenant_seconds.items():
            seconds.add_metric([tenant], int(mean[0]), mean[1])
        yield seconds
        yield self.steps.family()


def _pairs(
    name: str, documentation: str, labels: tuple[str, str], counts: dict[tuple[str, str], int]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, count in counts.items():
        family.add_metric(list(key), count)
    return family
