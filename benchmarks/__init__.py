"""Benchmarks of dynworkers.

`python -m dynworkers.benchmarks.dispatch [--quick]`: cold and warm dispatch latency, idle
sandbox memory, churn throughput, and the same trivial handler run by simpler alternatives
(a process per tenant, a subprocess per request, in-process RestrictedPython). See
`benchmarks.dispatch`.

Kept free of imports: a `spawn` child of `benchmarks.alternatives` imports this package.
"""
