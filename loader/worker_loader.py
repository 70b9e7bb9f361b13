"""Worker Loader semantics, after Cloudflare's `env.LOADER`.

Host side, on the supervisor's event loop; compilation runs in a worker thread, and a large
module's in a helper process (`compile_process`: the compiler holds the GIL), so that compiling
never stalls the loop that serves other tenants. `close()` stops the helper. `get(id, callback)`
returns a stub at once, as Cloudflare's does; its first call loads the code (the callback runs only
on a miss, and concurrent misses for one id share one callback run). `await loader.get(...)` loads
and returns the `WorkerStub`, as before. `load(code)` is never cached: each call gets a fresh
worker id and so a fresh sandbox. The cache of loaded workers is an LRU bounded by
`max_workers`; dropping an entry only means the next `get` runs its callback again.

Fails with `CompileError` (nothing cached, nothing run) or `InvalidWorkerCode`; a callback's own
exception propagates unchanged and leaves nothing cached.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from dynworkers.loader.cache import CompileCache
from dynworkers.loader.code import WorkerCode
from dynworkers.loader.compile import compile_worker
from dynworkers.loader.compile_process import CompileProcess
from dynworkers.loader.errors import InvalidWorkerCode
from dynworkers.loader.stub import Dispatcher, LazyWorker, WorkerStub
from dynworkers.sandbox_policy import Policy

Callback = Callable[[], WorkerCode | Awaitable[WorkerCode]]

_anonymous = itertools.count(1)


class WorkerLoader:
    def __init__(
        self, dispatcher: Dispatcher, policy: Policy, cache: CompileCache, max_workers: int = 4096
    ) -> None:
        self.dispatcher = dispatcher
        self.policy = policy
        self.cache = cache
        self.max_workers = max_workers
        self.workers: OrderedDict[str, WorkerStub] = OrderedDict()
        self._loading: dict[str, asyncio.Future[WorkerStub]] = {}
        self.callbacks_run = 0
        self.compiler = CompileProcess()

    def get(self, worker_id: str, callback: Callback) -> LazyWorker:
        """The worker `worker_id`, loaded from `callback()` when its code is first needed."""
        if not isinstance(worker_id, str) or not worker_id or len(worker_id) > 256:
            raise InvalidWorkerCode(
                f"worker id must be a non-empty str of <= 256 chars, got {worker_id!r}"
            )
        if not callable(callback):
            raise InvalidWorkerCode(f"the loader callback for {worker_id!r} must be callable")
        return LazyWorker(functools.partial(self._get, worker_id, callback))

    async def _get(self, worker_id: str, callback: Callback) -> WorkerStub:
        stub = self.workers.get(worker_id)
        if stub is not None:
            self.workers.move_to_end(worker_id)
            return stub
        pending = self._loading.get(worker_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[WorkerStub] = asyncio.get_running_loop().create_future()
        self._loading[worker_id] = future
        try:
            self.callbacks_run += 1
            code = callback()
            if inspect.isawaitable(code):
                code = await code
            stub = await self._compile(worker_id, code)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._loading[worker_id]
        future.set_result(stub)
        self.workers[worker_id] = stub
        while len(self.workers) > self.max_workers:
            self.workers.popitem(last=False)
        return stub

    async def load(self, code: WorkerCode) -> WorkerStub:
        return await self._compile(f"anonymous-{next(_anonymous)}", code)

    def forget(self, worker_id: str) -> bool:
        """Drop a cached worker so that the next `get` runs its callback (a redeploy)."""
        return self.workers.pop(worker_id, None) is not None

    async def _compile(self, worker_id: str, code: object) -> WorkerStub:
        if not isinstance(code, WorkerCode):
            raise InvalidWorkerCode(
                f"the loader callback for {worker_id!r} returned {type(code).__name__}, "
                "not a WorkerCode"
            )
        compiled = await asyncio.to_thread(
            compile_worker,
            worker_id,
            code,
            self.policy,
            self.cache,
            self.compiler.compile,
            self.compiler.scan,
        )
        return WorkerStub(compiled, self.dispatcher)

    async def close(self) -> None:
        """Stop the compile helper process, if one was started."""
        await asyncio.to_thread(self.compiler.close)
