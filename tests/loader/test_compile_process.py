"""Large modules compile in the helper process (the GIL stays free for the host's loop)."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from dynworkers.loader import CompileError, WorkerCode
from dynworkers.loader.cache import CompileCache
from dynworkers.loader.compile import compile_worker
from dynworkers.loader.compile_process import CompileProcess
from dynworkers.sandbox_policy import Policy, SourceRejected


def test_a_large_module_compiles_in_the_helper_and_a_small_one_in_the_thread() -> None:
    helper = CompileProcess(threshold=1000)
    try:
        small = helper.compile("x = 1\n", "small.py", Policy())
        big = helper.compile("y = 2\n" + "# padding\n" * 200, "big.py", Policy())
        assert helper.compiles == 1
        namespace: dict[str, object] = {}
        exec(marshal.loads(small), namespace)
        assert namespace["x"] == 1
        assert marshal.loads(big).co_filename == "big.py"
        with pytest.raises(SourceRejected) as rejected:
            helper.compile("def f(:\n" + "#\n" * 600, "bad.py", Policy())
        assert rejected.value.problems[0][0] == "bad.py"
    finally:
        helper.close()


def test_a_large_module_s_import_check_parses_in_the_helper_not_the_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The import check needs a parse too: for a large module it comes from the helper, with
    the compile, or alone when the code came from the compile cache on disk."""
    from dynworkers.loader import imports

    host_scans: list[object] = []
    real_collect = imports._ImportVisitor.collect

    def counted(visitor: imports._ImportVisitor, tree: object) -> object:
        host_scans.append(tree)
        return real_collect(visitor, tree)  # type: ignore[arg-type]

    monkeypatch.setattr(imports._ImportVisitor, "collect", counted)
    big = "import subprocess\nimport workers\n" + "# padding\n" * 200
    code = WorkerCode("main", {"main": big})
    helper = CompileProcess(threshold=1000)

    def cache() -> CompileCache:
        return CompileCache(tmp_path)

    try:
        with pytest.raises(CompileError) as refused:
            compile_worker(
                "t1", code, Policy(), CompileCache(tmp_path), helper.compile, helper.scan
            )
        assert "'subprocess' is not allowed" in str(refused.value)
        assert (helper.compiles, helper.scans) == (1, 0)
        imports._SEEN.clear()  # a restarted host: code from the cache on disk, no scan remembered
        with pytest.raises(CompileError) as again:
            compile_worker(
                "t1", code, Policy(), CompileCache(tmp_path), helper.compile, helper.scan
            )
        assert "'subprocess' is not allowed" in str(again.value)
        assert (helper.compiles, helper.scans) == (1, 1)
        assert host_scans == []
    finally:
        helper.close()
