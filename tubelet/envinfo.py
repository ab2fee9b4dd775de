"""`env.json`: what a result can be traced back to. The tubelet version and git commit (and
whether the tree was dirty) of the code and of the working directory, torch / CUDA / cuDNN /
NCCL versions, Python, host, GPUs, world size, the command line and the launcher's ids
(torchrun, SLURM). Secrets are redacted (tubelet.redact). Nothing here can hang a run: git
runs with a timeout, and anything that cannot be found is null."""
from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tubelet.redact import redact_argv, redact_config
from tubelet.rundir import write_atomic

GIT_TIMEOUT_S = 5.0
# The launcher's variables worth keeping: which job, which process, which node.
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                 "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME",
                 "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_PROCID",
                 "SLURM_LOCALID", "SLURM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES")


def git_state(path: Path) -> dict[str, Any] | None:
    """`{"commit", "dirty"}` of the git work tree holding `path`, or None (no git, not a
    repository, or git too slow)."""
    git = shutil.which("git")
    if git is None or not path.exists():
        return None

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run([git, "-C", str(path), *args], capture_output=True, text=True,
                                 timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if not commit:
        return None
    # untracked files count too: an experiment often runs from a new, uncommitted file
    status = run("status", "--porcelain")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def collect_env(*, world_size: int, argv: list[str] | None = None) -> dict[str, Any]:
    """The environment record (plain JSON data, redacted)."""
    import torch  # noqa: PLC0415 - the caller has it loaded already

    from tubelet import __version__  # noqa: PLC0415
    cuda = torch.cuda.is_available()
    nccl = None
    if cuda and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except (RuntimeError, AttributeError, TypeError):
            nccl = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    argv = sys.argv if argv is None else argv
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tubelet": {"version": __version__, "path": str(Path(__file__).resolve().parent),
                    "git": git_state(Path(__file__).resolve().parent)},
        "cwd": {"path": os.getcwd(), "git": git_state(Path.cwd())},
        "command": redact_argv([Path(argv[0]).name, *argv[1:]] if argv else []),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": cudnn, "nccl": nccl,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "world_size": world_size,
        "launcher": redact_config({k: os.environ[k] for k in LAUNCHER_VARS if k in os.environ}),
    }


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    """`env.json` of the latest start (a resumed run records where it runs now)."""
    write_atomic(Path(run_dir) / "env.json", (json.dumps(env, indent=2) + "\n").encode())
