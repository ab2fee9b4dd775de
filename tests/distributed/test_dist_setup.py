"""Fast, in-process checks of the distributed plumbing: SLURM env, `distributed:` validation,
the signal flag and the one-process NaN guard."""
from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from tubelet import distributed as dist
from tubelet.build import validate_config
from tubelet.config import load_config
from tubelet.engine.guard import NonFiniteError, StepGuard
from tubelet.registry import ConfigError

from .conftest import DDP_RECIPE


@pytest.mark.parametrize("nodelist, host", [("gpu[03-05,09],cpu1", "gpu03"), ("node7", "node7"),
                                            ("a-b[1,2]", "a-b1"), ("x[010-012]", "x010")])
def test_first_slurm_host(nodelist, host):
    assert dist.first_slurm_host(nodelist) == host


def test_srun_env_becomes_torchrun_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        # setenv first so monkeypatch records the key and removes what _env_from_slurm writes:
        # a leaked WORLD_SIZE=8 would make later in-process tests wait for 8 ranks
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                       "SLURM_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"}.items():
        monkeypatch.setenv(key, value)
    dist._env_from_slurm()
    got = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                      "MASTER_PORT")}
    assert got == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu12",
                   "MASTER_PORT": str(20000 + 123456 % 20000)}


@pytest.mark.parametrize("override, message", [
    ("distributed.stratgy=ddp", "distributed.stratgy: unknown key; did you mean 'strategy'?"),
    ("distributed.strategy=zero3", "distributed.strategy: unknown 'zero3'"),
    ("distributed.backend=mpi", "distributed.backend: unknown 'mpi'"),
    ("train.nan_gaurd=skip", "train.nan_gaurd: unknown key; did you mean 'nan_guard'?"),
])
def test_bad_distributed_keys_are_user_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        validate_config(load_config(DDP_RECIPE, [override]))


def test_signal_handlers_only_set_a_flag_and_are_restored():
    guard = StepGuard(policy="off", device=torch.device("cpu"))
    before = signal.getsignal(signal.SIGUSR1)
    with guard.signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert guard.signals.received == "SIGUSR1"
        assert guard.check(step=0, loss=torch.tensor(1.0), grad_norm=None)
        assert guard.stop_requested
    assert signal.getsignal(signal.SIGUSR1) is before


def test_guard_in_one_process_stops_or_skips():
    ok, nan = torch.tensor(1.0), torch.tensor(math.nan)
    stop = StepGuard(policy="stop", device=torch.device("cpu"))
    assert stop.check(step=3, loss=ok, grad_norm=torch.tensor(2.0))
    with pytest.raises(NonFiniteError, match="non-finite gradient norm at step 4; no rank"):
        stop.check(step=4, loss=ok, grad_norm=torch.tensor(math.inf))
    skip = StepGuard(policy="skip", skip_limit=2, device=torch.device("cpu"))
    assert not skip.check(step=1, loss=nan, grad_norm=None)
    assert skip.check(step=2, loss=ok, grad_norm=None)  # a good step resets the count
    assert not skip.check(step=3, loss=nan, grad_norm=None)
    assert not skip.check(step=4, loss=nan, grad_norm=None)
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row"):
        skip.check(step=5, loss=nan, grad_norm=None)
