import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
KUBENET = [sys.executable, "-m", "kubenet.cli"]


@pytest.fixture
def run_cli():
    """Run the real command line; returns the CompletedProcess."""
    def run(*args: str, lab: str | None = None, stdin: str | None = None, check: bool = False):
        argv = [*KUBENET, *args]
        if lab:
            argv += ["--lab", lab]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=ROOT,
                              timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed: {proc.stderr}")
        return proc
    return run


@pytest.fixture
def lab_name(run_cli):
    """A unique lab name for a CLI test; the lab is always ended afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    run_cli("down", lab=name)
