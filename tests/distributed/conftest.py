"""Distributed test helpers: real `torchrun` launches of the CLI with gloo on CPU, each bounded
by a subprocess timeout, and the reference runs several tests compare against (made once)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tubelet.engine.checkpoint import load_checkpoint
from conftest import assert_every_tensor_equal, assert_states_equal  # noqa: F401  (re-exported)
from conftest import run_module

HERE = Path(__file__).resolve().parent
DDP_RECIPE = HERE.parents[1] / "configs" / "debug" / "ddp_tiny.yaml"
STEPS = 24  # ddp_tiny: 24 clips / global batch 4 = 6 steps x 4 epochs


def env(**extra: str) -> dict[str, str]:
    """One thread per process: the 1-process reference then computes like each DDP rank, and
    2 ranks don't oversubscribe 2 cores. HERE is importable for the test-only task."""
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path,
            **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(root: Path, run_dir: str | Path, *extra: str) -> list[str]:
    return ["train", str(DDP_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}", *extra]


def torchrun_cmd(*args: str, nproc: int = 2, launcher: tuple[str, ...] = ("--standalone",)
                 ) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher,
            f"--nproc-per-node={nproc}", "-m", "tubelet.cli", *args]


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tubelet.cli", *args]


def run(cmd: list[str], *, cwd: Path, timeout: float = 120, check: bool = True
        ) -> subprocess.CompletedProcess:
    assert cmd[:2] == [sys.executable, "-m"], cmd
    # tubelet.cli and torchrun's agent fork from the tests' server (conftest.run_tubelet); the
    # agent starts its workers as new interpreters
    proc = run_module(*cmd[2:], cwd=cwd, timeout=timeout, env=env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def ckpt(run_dir: Path, step: int | None = None) -> dict:
    name = "last.pt" if step is None else f"step_{step:08d}.pt"
    return load_checkpoint(Path(run_dir) / "checkpoints" / name)


def max_param_diff(a: dict, b: dict) -> float:
    assert a["model"].keys() == b["model"].keys()
    return max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])


def worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the workers a torchrun agent started (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            environ = dict(kv.split("=", 1) for kv in
                           (entry / "environ").read_bytes().decode().split("\0") if "=" in kv)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if "RANK" in environ:
            found[int(environ["RANK"])] = int(entry.name)
    return found


@pytest.fixture(scope="session")
def ddp_reference(tmp_path_factory, tiny_data_root) -> Path:
    """An uninterrupted 2-rank DDP run of ddp_tiny: the run every distributed test compares to."""
    cwd = tmp_path_factory.mktemp("ddp_ref")
    run(torchrun_cmd(*train_args(tiny_data_root, "run")), cwd=cwd)
    return cwd / "run"
