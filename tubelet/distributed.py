"""Process-group setup from torchrun or SLURM, and rank helpers that also work when no process
group exists (one process).

`init_distributed` reads the launcher's environment: torchrun's RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT, or, under a bare `srun`, SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID
and the first host of SLURM_NODELIST, so `srun tubelet train ...` needs no wrapper script.
"""
from __future__ import annotations

import atexit
import datetime
import logging
import os
import re
import sys
import threading
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
BACKENDS = ("auto", "nccl", "gloo")
_joined = False  # this process joined a process group (its backend's threads may still run)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM nodelist: "gpu[03-05,09],cpu1" -> "gpu03" (what
    `scontrol show hostnames | head -1` prints, without needing scontrol)."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        raise ConfigError(f"SLURM_NODELIST: cannot read {nodelist!r}")
    prefix, ranges = m.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _env_from_slurm() -> None:
    """Fill torchrun's variables from SLURM's when `srun` started us directly."""
    env = os.environ
    if "RANK" in env or int(env.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_PROCID" not in env:
        return
    env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", first_slurm_host(env.get("SLURM_NODELIST", "127.0.0.1")))
    # every task of a job computes the same port from the job id; distinct jobs rarely collide
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


def init_distributed(*, device: torch.device, backend: str = "auto",
                     timeout_s: float = 1800.0) -> torch.device:
    """Join the process group when launched by torchrun or srun with more than one process,
    and return this rank's device: on CUDA, the GPU of its local rank (one device per local
    rank). The backend is NCCL on CUDA and gloo on CPU unless `backend` says otherwise.
    `timeout_s` bounds how long a collective waits for a missing rank."""
    if backend not in BACKENDS:
        raise ConfigError(f"distributed.backend: unknown {backend!r}; choose one of {list(BACKENDS)}")
    _env_from_slurm()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", get_local_rank())
        torch.cuda.set_device(device)  # before any CUDA work, so nothing lands on GPU 0
    if not is_initialized():
        name = ("nccl" if device.type == "cuda" else "gloo") if backend == "auto" else backend
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(name, timeout=timeout, store=_restart_store(timeout),
                                rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]),
                                device_id=device if name == "nccl" else None)
        global _joined
        _joined = True
        log.info("process group: %s, rank %d of %d", name, get_rank(), get_world_size())
    return device


def _restart_store(timeout: datetime.timedelta) -> dist.Store | None:
    """Under torchrun, the agent's store with keys scoped to this restart attempt.

    torchrun keeps one store across `--max-restarts` attempts, and the process-group keys
    (each rank's address) are not scoped by attempt: a restarted rank that arrives before
    its peers reads a dead rank's address and fails with "Connection refused" (seen with
    torch 2.13 + gloo when rank 0 imports slowly). None: let init_process_group use env://.
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in env:
        return None
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                          timeout=timeout)
    # `tubelet run` starts its stages one after another under the same agent: one scope each
    stage = f"/stage_{env['TUBELET_STAGE']}" if env.get("TUBELET_STAGE") else ""
    return dist.PrefixStore(f"tubelet/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}{stage}",
                            store)


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def joined() -> bool:
    """Whether this process joined a process group (and may still run its backend's threads)."""
    return _joined


def exit_process(code: int) -> NoReturn:
    """End a process that joined a process group with `code`, without the interpreter's
    finalization: gloo's worker threads outlive destroy_process_group while
    anything still holds the group (an FSDP2 model's device mesh, until the garbage collector
    frees it: in the crash, finalization's own collection), and one that lets go of a
    Python-owned tensor of a finished collective after finalization began takes the GIL and
    aborts the process ("terminate called without an active exception", exit -6) after a run
    that succeeded (pytorch#190489; a core dump showed ~AsyncBroadcastWork in ProcessGroupGloo's
    runLoop, 1 FSDP2 run in ~40 under load). What an exit does first still runs, in its order:
    non-daemon threads finish (a checkpoint commit), then atexit handlers (logging, run dir,
    trackers), then the streams are flushed."""
    threading._shutdown()  # noqa: SLF001 - what Py_FinalizeEx runs first
    atexit._run_exitfuncs()  # noqa: SLF001 - and second
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(code)


def check_same(value: str, *, what: str) -> None:
    """Every rank must hold the same `value` (a config hash): else all ranks raise, rather
    than train different things and hang at the first mismatched collective."""
    if not is_initialized():
        return
    values: list[Any] = [None] * get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        ranks = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise ConfigError(f"{what}: ranks disagree ({ranks}); every rank must run the same "
                          "recipe and overrides")


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """In place: the elementwise max over ranks (any rank's flag set -> set everywhere)."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In place: the sum over ranks."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def collective_device() -> torch.device:
    """Where a tensor for a collective must live: NCCL only reduces CUDA tensors."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

