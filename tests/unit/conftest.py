"""The fast tier's one rule: a unit test runs in this process. A test that launches a program (a Python
interpreter: the CLI or a training run in a fresh process; accelerate, torchrun, pip, Slurm) belongs in
tests/integration/, which `bash launch/test.sh --all` runs. What libraries start on their own (inductor's
compiler, WebDataset's `pipe:` and curl readers) is not a launch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LAUNCHERS = ("python", "accelerate", "torchrun", "pip", "sbatch", "srun", "distgan")


class LaunchInUnitTest(AssertionError):
    pass


def _from_torch() -> bool:
    """Inductor starts its compile workers itself (a Python subprocess pool): a library's, not a launch."""
    frame = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("torch."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@pytest.fixture(autouse=True)
def no_launches(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    original = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
        cmd = args[0] if args else kwargs.get("args")
        program = str(cmd[0] if isinstance(cmd, list | tuple) else str(cmd).split()[0])
        if (program == sys.executable or Path(program).name.startswith(LAUNCHERS)) and not _from_torch():
            raise LaunchInUnitTest(
                f"{request.node.nodeid} launches {Path(program).name}: unit tests run in-process; move it to "
                "tests/integration/"
            )
        original(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
