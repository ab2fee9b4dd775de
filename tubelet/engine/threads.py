"""`train.threads`: how many intra-op threads torch uses in this process.

torch's default is one thread per core of the machine, whatever share of it this process may
use. On a shared or containerised machine, or with several ranks or loader workers per node,
that oversubscribes the cores and every step waits on threads that wait on each other (the
quickstart on a loaded 2-core machine: 0.96 s/step at torch's default, 0.16 s at one thread).
`auto` counts the cores this process may really use and leaves one per loader worker; an
explicit OMP_NUM_THREADS is the user's choice and wins (except torchrun's placeholder, below).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# torch's own choice (one per physical core, or OMP_NUM_THREADS), read before anything sets it:
# `auto` only ever lowers it, since hyperthreads add little to intra-op math
TORCH_DEFAULT = torch.get_num_threads()


def check_threads(value: object) -> None:
    """`train.threads` is 'auto' or a whole number >= 1."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ConfigError(f"train.threads: expected 'auto' or an integer >= 1, got {value!r}")


def _cgroup_v2_dirs(proc_cgroup: Path, root: Path) -> list[Path]:
    """This process's cgroup v2 directory and its ancestors up to `root` (a quota anywhere on
    the path limits us)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return []
    here = root / rel.strip().lstrip("/")
    return [here, *[p for p in here.parents if p.is_relative_to(root)]]


def cgroup_cpu_limit(*, proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores from cgroup v2 `cpu.max` (or v1 `cpu.cfs_quota_us`), the
    tightest one on this process's path; None when unlimited or unreadable."""
    quotas = []
    for d in _cgroup_v2_dirs(proc_cgroup, root):
        try:
            quota, period = (d / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if quota != "max":
            quotas.append(int(quota) / int(period))
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0:
            quotas.append(quota / period)
    except (OSError, ValueError):
        pass
    return min(quotas) if quotas else None


def usable_cores(env: dict[str, str] | None = None) -> tuple[int, str]:
    """(cores this process may use, how that was found): the smallest of its CPU affinity,
    the cgroup quota and SLURM_CPUS_PER_TASK, divided among the ranks on this node
    (LOCAL_WORLD_SIZE, set by torchrun)."""
    env = os.environ if env is None else env
    affinity = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1)
    limits = {"affinity": float(affinity)}
    quota = cgroup_cpu_limit()
    if quota is not None:
        limits["cgroup cpu.max"] = quota
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits["SLURM_CPUS_PER_TASK"] = float(env["SLURM_CPUS_PER_TASK"])
    source = min(limits, key=limits.get)
    cores = max(1, math.floor(limits[source]))
    how = f"{cores} cores by {source}"
    local_ranks = int(env["LOCAL_WORLD_SIZE"]) if env.get("LOCAL_WORLD_SIZE", "").isdigit() else 1
    if local_ranks > 1:
        cores = max(1, cores // local_ranks)
        how += f" / {local_ranks} local ranks"
    return cores, how


def choose_threads(setting: int | str, *, num_workers: int, env: dict[str, str] | None = None,
                   torch_default: int = TORCH_DEFAULT) -> tuple[int, str]:
    """(threads, why) for `train.threads`: an int is taken as given; 'auto' is OMP_NUM_THREADS
    when the user set it, else the usable cores minus one per loader worker (the workers decode
    on cores of their own), at most torch's default and at least 1."""
    check_threads(setting)
    if setting != "auto":
        return int(setting), "train.threads"
    env = os.environ if env is None else env
    omp = env.get("OMP_NUM_THREADS", "")
    local_ranks = env.get("LOCAL_WORLD_SIZE", "")
    # torchrun sets OMP_NUM_THREADS=1 itself when it starts several processes per node and the
    # user did not; that placeholder is what `auto` replaces (train.threads=1 still forces 1)
    placeholder = omp == "1" and local_ranks.isdigit() and int(local_ranks) > 1
    if omp.isdigit() and int(omp) >= 1 and not placeholder:
        return int(omp), "auto: OMP_NUM_THREADS is set"
    cores, how = usable_cores(env)
    # torch's default is a physical-core count unless OMP_NUM_THREADS (here: torchrun's
    # placeholder) set it, so it caps only when the variable is unset
    cap = torch_default if not omp else cores
    threads = max(1, min(cores - num_workers, cap))
    how = f"auto: {how}, minus {num_workers} loader workers"
    if cores - num_workers > cap:
        how += f", at most torch's default {cap}"
    return threads, how


def set_threads(setting: int | str, *, num_workers: int) -> int:
    """Apply `train.threads` to torch and say what was chosen and why."""
    threads, why = choose_threads(setting, num_workers=num_workers)
    torch.set_num_threads(threads)
    log.info("threads: %d intra-op (%s; torch's default here: %d)", threads, why, TORCH_DEFAULT)
    return threads
