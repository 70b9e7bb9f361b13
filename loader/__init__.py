"""loader: Worker Loader semantics.

`WorkerCode` in, `WorkerStub` out: compile under the policy (every error at once), cache by source
hash and policy version in memory and on disk, hand calls to a dispatcher. Never forks, never talks
ZeroMQ: the runtime's Supervisor is the dispatcher.
"""

from dynworkers.loader.cache import CompileCache
from dynworkers.loader.code import Binding, Limits, WorkerCode
from dynworkers.loader.compile import CompiledModule, CompiledWorker, compile_worker
from dynworkers.loader.errors import CompileError, InvalidWorkerCode, LoaderError
from dynworkers.loader.stub import (
    Dispatcher,
    EntrypointStub,
    FetchResponse,
    LazyEntrypoint,
    LazyWorker,
    WorkerStub,
    stub_worker,
)
from dynworkers.loader.worker_loader import WorkerLoader

__all__ = [
    # what a host writes
    "Binding",
    "Limits",
    "WorkerCode",
    # what a host gets back
    "EntrypointStub",
    "FetchResponse",
    "LazyEntrypoint",
    "LazyWorker",
    "WorkerLoader",
    "WorkerStub",
    "stub_worker",
    # for the runtime
    "CompileCache",
    "CompiledModule",
    "CompiledWorker",
    "Dispatcher",
    "compile_worker",
    # errors
    "CompileError",
    "InvalidWorkerCode",
    "LoaderError",
]
