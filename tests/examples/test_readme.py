"""Every code block of the README runs as written.

A block is either the whole of a file under `examples/` (its first line names the file, and the
block must equal the file), which a test here runs, or is marked as a fragment by a
`<!-- fragment: why -->` line just before it (shell sessions, configuration, diagrams).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DAEMONS
from tests.runtime.daemon.support import EXAMPLES, SOURCE_ROOT, DaemonProcess

README = SOURCE_ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
NAMED = re.compile(r"^# (examples/[\w/]+\.py)\b")

pytestmark = pytest.mark.timeout(120)


def _blocks() -> list[tuple[str, str, str]]:
    """(language, body, the line before the block) for each fenced block."""
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append((match.group(1), match.group(2), before))
    return found


def _run(example: str, cwd: Path, **environ: str) -> str:
    env = {"PYTHONPATH": str(SOURCE_ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    ran = subprocess.run(
        [sys.executable, str(SOURCE_ROOT / example)],
        cwd=cwd, capture_output=True, text=True, timeout=90, env={**env, **environ},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_every_block_is_an_example_file_or_marked_as_a_fragment() -> None:
    blocks = _blocks()
    assert blocks
    named = []
    for language, body, before in blocks:
        if before.startswith("<!-- fragment"):
            continue
        first = NAMED.match(body)
        assert language == "python" and first, f"a README block is neither: {body[:200]!r}"
        named.append(first.group(1))
        assert (SOURCE_ROOT / first.group(1)).read_text() == body, (
            f"the README's copy of {first.group(1)} differs from the file"
        )
    assert set(named) == {
        "examples/embedding.py",
        "examples/workflows.py",
        "examples/control_client.py",
    }


def test_the_embedding_example_boots_from_ready_spares(tmp_path: Path) -> None:
    lines = _run("examples/embedding.py", tmp_path).splitlines()
    assert lines[0] == "200 {'n': 1, 'path': 'https://acme.example/hello'}"
    assert lines[1] == "hello, bob"
    latency = ast.literal_eval(lines[2])  # the printed boot percentiles (never asserted on)
    assert set(latency) == {"p50", "p90", "p99"}


def test_the_workflows_example_runs_an_instance_to_complete(tmp_path: Path) -> None:
    out = _run("examples/workflows.py", tmp_path)
    assert "'status': 'complete'" in out and "'squared': 9" in out


def test_the_client_example_drives_the_quick_start_daemon(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, EXAMPLES)
    daemon.start()
    SHARED_DAEMONS.add(daemon.pid)
    try:
        out = _run("examples/control_client.py", tmp_path, DYNWORKERS_URL=daemon.control)
        tenants, status, waiting = out.splitlines()
        assert json.loads(tenants.replace("'", '"')) == ["agent", "counter", "pipeline"]
        assert status in ("queued", "running", "waiting")
        assert waiting.startswith("[")
    finally:
        SHARED_DAEMONS.discard(daemon.pid)
        assert daemon.stop() == 0
