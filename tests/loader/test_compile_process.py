"""Large modules compile in the helper process (the GIL stays free for the host's loop)."""

from __future__ import annotations

import marshal

import pytest

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
