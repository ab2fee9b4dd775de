"""`train.threads`: the cores this process may use, from every source that can limit them."""
import os

import pytest
import torch

from tubelet.engine import threads
from tubelet.engine.threads import cgroup_cpu_limit, check_threads, choose_threads, usable_cores
from tubelet.registry import ConfigError

AFFINITY = len(os.sched_getaffinity(0))


def fake_cgroup(tmp_path, rel: str, limits: dict[str, str]):
    """A cgroup v2 tree under tmp_path: `limits` maps a directory (relative) to its cpu.max."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{rel}\n")
    root = tmp_path / "cg"
    for d, cpu_max in limits.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "cpu.max").write_text(cpu_max + "\n")
    return proc, root


def test_cgroup_quota_is_the_tightest_on_the_path(tmp_path):
    proc, root = fake_cgroup(tmp_path, "/a/b", {"": "max 100000", "a": "350000 100000",
                                                 "a/b": "150000 100000"})
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) == 1.5
    proc, root = fake_cgroup(tmp_path / "2", "/a", {"": "max 100000", "a": "max 100000"})
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) is None
    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "missing", root=root) is None


def test_usable_cores_takes_the_smallest_limit_and_divides_among_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert usable_cores({}) == (AFFINITY, f"{AFFINITY} cores by affinity")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert usable_cores({"SLURM_CPUS_PER_TASK": "6"})[0] == 6
    assert usable_cores({"LOCAL_WORLD_SIZE": "4"}) == (8, "32 cores by affinity / 4 local ranks")
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)  # a fractional quota rounds down
    assert usable_cores({"SLURM_CPUS_PER_TASK": "6"}) == (2, "2 cores by cgroup cpu.max")
    assert usable_cores({"LOCAL_WORLD_SIZE": "8"})[0] == 1  # never below one


def test_auto_leaves_a_core_per_loader_worker_and_an_int_is_taken_as_given(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert choose_threads("auto", num_workers=3, env={}, torch_default=8)[0] == 5
    assert choose_threads("auto", num_workers=20, env={}, torch_default=8)[0] == 1
    # 8 logical CPUs, torch's default 4 (physical cores): never more than torch would take
    assert choose_threads("auto", num_workers=1, env={}, torch_default=4) == (
        4, "auto: 8 cores by affinity, minus 1 loader workers, at most torch's default 4")
    assert choose_threads(3, num_workers=20, env={}) == (3, "train.threads")


def test_an_explicit_omp_num_threads_wins_but_not_torchruns_placeholder(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert choose_threads("auto", num_workers=2, env={"OMP_NUM_THREADS": "3"})[0] == 3
    assert choose_threads("auto", num_workers=2, env={"OMP_NUM_THREADS": "1"})[0] == 1
    assert choose_threads("auto", num_workers=2, env={"OMP_NUM_THREADS": "1",
                                                     "LOCAL_WORLD_SIZE": "1"})[0] == 1
    # torchrun with 4 local ranks set it to 1 for us: 16 cores / 4 ranks - 2 workers
    assert choose_threads("auto", num_workers=2, env={"OMP_NUM_THREADS": "1",
                                                     "LOCAL_WORLD_SIZE": "4"},
                          torch_default=1)[0] == 2  # torch took the placeholder too
    assert choose_threads("auto", num_workers=2, env={"OMP_NUM_THREADS": "6",
                                                     "LOCAL_WORLD_SIZE": "4"})[0] == 6
    assert choose_threads(5, num_workers=2, env={"OMP_NUM_THREADS": "3"})[0] == 5


@pytest.mark.parametrize("bad", [0, -1, 2.5, "two", None, True, [1]])
def test_bad_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="train.threads: expected 'auto' or an integer >= 1"):
        check_threads(bad)


def test_set_threads_applies_the_choice():
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1, num_workers=0) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
