"""The daemon's Prometheus metrics: what `GET /metrics` answers.

Host side, on the daemon's event loop. `DaemonMetrics` owns one `CollectorRegistry` of its own
(never the process-wide default: one process may run several daemons, as the tests do).

Two kinds of figures:
- latencies are histograms fed as things happen (plain numbers, no locks, folded into the text
  at scrape: runtime.daemon.request_metrics): boot latency from the pool's observers ("boot"
  for a cold start, "ready.warm" from `Supervisor.invoke`), dispatch latency from the front door
  (`observe_dispatch`), step durations from `engine.step_observers`;
- per tenant, from the front door: requests by status class, errors by kind (a closed list: the
  front door's own error names, the tenant's exceptions all counted as "TenantError") and latency
  as a summary (count and sum: a mean per tenant; percentiles come from the histogram above,
  across tenants, so that a tenant costs three series, not thirty). A name that is no tenant
  (404 UnknownTenant) is counted in the totals only: a scanner cannot make series;
- counts the supervisor and the engine already keep (starts, evictions, pool occupancy, memory,
  instances by status) are read at scrape time: `render()` gathers them (the store query and the
  /proc reads off the loop's thread), then a collector yields them while the text is generated.

Failures: a sandbox that exited between listing and measuring is left out; a supervisor or
engine that is closed or not started contributes nothing. Rendering never raises for them.

Also in the registry: prometheus_client's process collector (`process_*`: CPU, memory, open file
descriptors of the daemon itself) and platform collector (`python_info`), and
`dynworkers_build_info{version, python}`. No `_created` series: they double the series count and
carry nothing a scraper needs; `disable_created_metrics()` is process-wide, which is fine in the
daemon, whose process this is.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dynworkers import __version__
from dynworkers.engine.errors import EngineError
from dynworkers.runtime.daemon.request_metrics import RequestMetrics
from dynworkers.runtime.errors import SupervisorClosed
from dynworkers.runtime.metrics import EVICTION_REASONS

if TYPE_CHECKING:
    from dynworkers.engine import Engine
    from dynworkers.runtime.supervisor import Supervisor


def _steps(low: float, high: float) -> tuple[float, ...]:
    """Bucket bounds in 1-2.5-5 steps per decade, from `low` to `high` inclusive."""
    bounds: list[float] = []
    decade = low
    while decade <= high:
        bounds.extend(b for b in (decade, decade * 2.5, decade * 5) if b <= high * 1.0001)
        decade *= 10
    return tuple(round(b, 6) for b in bounds)


#: 100 µs (a warm turn) to 10 s (a boot that waited for a busy zygote)
BOOT_BUCKETS = _steps(0.0001, 10.0)
#: 250 µs (a warm call that does nothing) to a minute (past most deadlines)
DISPATCH_BUCKETS = (*BOOT_BUCKETS[1:], 30.0, 60.0)
#: 1 ms to the default step timeout (10 minutes)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
#: status classes present from the start, so rates exist before the first error
CODES = ("2xx", "4xx", "5xx")
STEP_OUTCOMES = ("complete", "failed", "retry")


@dataclass
class _Scrape:
    """Figures read at scrape time; a section is None when its owner is not running."""

    cold: int = 0
    warm: int = 0
    rehydrations: int = 0
    boots: int = 0
    boot_failures: int = 0
    evictions: dict[str, int] = field(default_factory=dict)
    pool: tuple[int, int, int, int] | None = None  # sandboxes, capacity, spares, booting
    memory: list[tuple[str, int]] = field(default_factory=list)  # (tenant, RSS bytes)
    #: (tenant, its sandboxes) and (tenant, its calls queued for one)
    tenant_sandboxes: list[tuple[str, int]] = field(default_factory=list)
    tenant_queued: list[tuple[str, int]] = field(default_factory=list)
    instances: dict[str, int] | None = None
    engine: tuple[int, int, int, int] | None = None  # running, ready, hibernating, store failures


def _resident(sandboxes: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(tenant, RSS of all its sandboxes) for each tenant with one still there; runs in a
    worker thread."""
    found: dict[str, int] = {}
    for tenant, pid in sandboxes:
        try:
            rss = int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            continue  # exited (or became unreadable) since it was listed
        found[tenant] = found.get(tenant, 0) + rss
    return list(found.items())


class _ScrapeCollector:
    """Yields the figures `render()` gathered, while the registry generates the text."""

    def __init__(self) -> None:
        self.scrape: _Scrape | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.scrape
        if s is None:  # generate_latest called outside render(): nothing gathered
            return
        yield _counter("cold_starts", "Cold starts: a spare specialised for a tenant.", s.cold)
        yield _counter("warm_starts", "Calls that found their tenant's sandbox live.", s.warm)
        yield _counter(
            "rehydrations", "Cold starts of a tenant that had a sandbox before.", s.rehydrations
        )
        yield _counter("sandbox_boots", "Blank sandboxes forked and confined.", s.boots)
        yield _counter("sandbox_boot_failures", "Sandboxes that failed to boot.", s.boot_failures)
        yield _labelled(
            CounterMetricFamily,
            "evictions",
            "Sandboxes ended by the supervisor, by reason.",
            "reason",
            s.evictions.items(),
        )
        if s.pool is not None:
            sandboxes, capacity, spares, booting = s.pool
            yield _gauge("pool_sandboxes", "Sandboxes specialised for a tenant.", sandboxes)
            yield _gauge("pool_capacity", "Most sandboxes specialised at once.", capacity)
            yield _gauge("pool_spares", "Blank sandboxes ready for a cold start.", spares)
            yield _gauge("pool_booting", "Sandboxes booting now.", booting)
            yield _labelled(
                GaugeMetricFamily,
                "tenant_memory_bytes",
                "Resident memory of each tenant's sandboxes, summed.",
                "tenant",
                s.memory,
            )
            yield _labelled(
                GaugeMetricFamily,
                "tenant_sandboxes",
                "Sandboxes of each tenant (a busy tenant runs in several).",
                "tenant",
                s.tenant_sandboxes,
            )
            yield _labelled(
                GaugeMetricFamily,
                "tenant_calls_queued",
                "Calls of each tenant waiting for one of its sandboxes to come free.",
                "tenant",
                s.tenant_queued,
            )
        if s.instances is not None:
            yield _labelled(
                GaugeMetricFamily,
                "workflow_instances",
                "Workflow instances by status.",
                "status",
                s.instances.items(),
            )
        if s.engine is not None:
            running, ready, hibernating, store_failures = s.engine
            yield _gauge("engine_running", "Workflow wake-ups running now.", running)
            yield _gauge("engine_ready", "Workflow instances ready, waiting for a slot.", ready)
            yield _gauge(
                "engine_hibernating", "Workflow instances waiting on a timer.", hibernating
            )
            yield _counter(
                "engine_store_failures",
                "Workflow wake-ups a store failure stopped (each retried after a backoff).",
                store_failures,
            )


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Iterable[tuple[str, float]],
) -> Metric:
    """One metric family with one label, a sample per (label value, value)."""
    metric = family(f"dynworkers_{name}", documentation, labels=[label])
    for key, value in values:
        metric.add_metric([key], value)
    return metric


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"dynworkers_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"dynworkers_{name}", documentation, value=value)


class DaemonMetrics:
    def __init__(self, supervisor: Supervisor, engine: Engine | None = None) -> None:
        self.supervisor = supervisor
        self.engine = engine
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info(
            "dynworkers_build",
            "The dynworkers version and the Python that runs it.",
            registry=self.registry,
        ).info({"version": __version__, "python": platform.python_version()})
        # fed on the hot path as plain numbers, folded into the registry's text when scraped
        self.live = RequestMetrics(
            CODES, DISPATCH_BUCKETS, BOOT_BUCKETS, STEP_BUCKETS, STEP_OUTCOMES
        )
        self.registry.register(self.live)
        #: (seconds, status, tenant or None, error kind or None): one answered request
        self.observe_dispatch = self.live.observe_dispatch
        self._collector = _ScrapeCollector()
        self.registry.register(self._collector)
        self._started = False

    # --- observers -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen to the pool's boots and warm turns, and the engine's step attempts."""
        if self._started:
            return
        self._started = True
        self.supervisor.metrics.observers.append(self._observe_pool)
        if self.engine is not None:
            self.engine.step_observers.append(self._observe_step)

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._observe_pool in self.supervisor.metrics.observers:
            self.supervisor.metrics.observers.remove(self._observe_pool)
        if self.engine is not None and self._observe_step in self.engine.step_observers:
            self.engine.step_observers.remove(self._observe_step)

    def _observe_pool(self, event: str, tenant: str, value: float) -> None:
        if event == "ready.warm":
            self.live.warm.observe(value)
        elif event == "boot":
            self.live.cold.observe(value)

    def _observe_step(self, tenant: str, outcome: str, seconds: float) -> None:
        self.live.steps.child(outcome).observe(seconds)

    # --- scraping --------------------------------------------------------------------------------

    async def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for `GET /metrics`."""
        scrape = await self._gather()
        # No await between here and the text: a concurrent scrape cannot swap the figures.
        self._collector.scrape = scrape
        try:
            body = generate_latest(self.registry)
        finally:
            self._collector.scrape = None
        return body, CONTENT_TYPE_LATEST

    async def _gather(self) -> _Scrape:
        counts = self.supervisor.metrics
        scrape = _Scrape(
            cold=counts.cold,
            warm=counts.warm,
            rehydrations=counts.rehydrations,
            boots=counts.boots,
            boot_failures=counts.boot_failures,
            evictions={reason: counts.evictions.get(reason, 0) for reason in EVICTION_REASONS},
        )
        for reason, count in counts.evictions.items():  # a reason added since: shown, not lost
            scrape.evictions.setdefault(reason, count)
        try:
            pool = self.supervisor.pool
        except SupervisorClosed:
            pool = None
        if pool is not None:
            scrape.pool = (len(pool.lru), pool.max_sandboxes, len(pool.spares), pool.booting)
            groups = list(pool.active.items())
            scrape.tenant_sandboxes = [(t, len(g.sandboxes)) for t, g in groups]
            scrape.tenant_queued = [(t, g.queued) for t, g in groups]
            listed = [(t, h.pid) for t, g in groups for h in g.sandboxes if h.alive and h.pid]
            if listed:  # /proc reads off the loop: a large pool must not stall requests
                scrape.memory = await asyncio.to_thread(_resident, listed)
        engine = self.engine
        if engine is not None and engine.started and not engine.closed:
            stats = engine.stats()
            scrape.engine = (
                stats["running"],
                stats["ready"],
                stats["hibernating"],
                stats["store_failures"],
            )
            try:
                scrape.instances = await engine.count_instances()
            except EngineError:
                scrape.instances = None  # closed meanwhile, or the store failed: left out
        return scrape
