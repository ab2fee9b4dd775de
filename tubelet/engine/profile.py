"""`train.profile: {start: N, steps: K}`: profile K optimizer steps after step N with
torch.profiler, then stop. Writes to the run dir a Chrome/Perfetto trace
(`profile_trace.json`, open it in https://ui.perfetto.dev or chrome://tracing) and a table of the
ops that took the most time (`profile_ops.txt`); with several ranks, every rank writes its own
(`profile_trace_rank1.json`, ...). Unset, nothing is imported and nothing runs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tubelet.registry import ConfigError, did_you_mean

log = logging.getLogger("tubelet")
KEYS = ("start", "steps")
TOP_OPS = 30  # rows of the table


def check_profile(profile: Any, *, total_steps: int) -> tuple[int, int] | None:
    """(start, steps) of a `train.profile` node, or None when unset; ConfigError otherwise."""
    if profile is None:
        return None
    if not isinstance(profile, dict):
        raise ConfigError(f"train.profile: expected {{start: N, steps: K}}, got {profile!r}")
    for key in profile:
        if key not in KEYS:
            raise ConfigError(f"train.profile.{key}: unknown key{did_you_mean(key, KEYS)} "
                              "(expected start and steps)")
    for key, low in (("start", 0), ("steps", 1)):
        value = profile.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"train.profile.{key}: expected an integer >= {low}, got {value!r}")
    start, steps = profile["start"], profile["steps"]
    if start + steps > total_steps:
        raise ConfigError(f"train.profile: steps {start + 1}-{start + steps} are past the run's "
                          f"{total_steps} steps; lower train.profile.start or .steps")
    return start, steps


class StepProfiler:
    """Starts torch.profiler when the run reaches optimizer step `start` and stops it `steps`
    steps later, writing the trace and the table. A resumed run that passed `start` already
    does not profile (a partial window would mislead)."""

    def __init__(self, *, start: int, steps: int, run_dir: Path, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> None:
        self.start, self.steps, self.device = start, steps, device
        suffix = f"_rank{rank}" if world_size > 1 else ""
        self.trace_path = Path(run_dir) / f"profile_trace{suffix}.json"
        self.table_path = Path(run_dir) / f"profile_ops{suffix}.txt"
        self._prof: Any = None

    def at_step(self, step: int) -> bool:
        """Call with the optimizer step count before the first step and after every step.
        True when it stopped and wrote the files now (time that is no step's)."""
        if self._prof is None and step == self.start:
            from torch.profiler import ProfilerActivity, profile
            activities = [ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self._prof = profile(activities=activities, record_shapes=True)
            self._prof.__enter__()
            log.info("profiling steps %d-%d", step + 1, step + self.steps)
        elif self._prof is not None and step == self.start + self.steps:
            self.close()
            return True
        return False

    def close(self) -> None:
        """Stop and write what was profiled (also when the run stops inside the window)."""
        prof, self._prof = self._prof, None
        if prof is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the window's kernels belong in the trace
        prof.__exit__(None, None, None)
        prof.export_chrome_trace(str(self.trace_path))
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=TOP_OPS)
        self.table_path.write_text(f"torch.profiler, optimizer steps {self.start + 1}-"
                                   f"{self.start + self.steps}, sorted by {sort}\n{table}\n")
        log.info("profile: wrote %s and %s", self.trace_path, self.table_path)
