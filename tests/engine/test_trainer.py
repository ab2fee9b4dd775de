"""Trainer behaviour in-process on the debug recipe: accumulation, AMP, schedule, best."""
import json

import pytest
import torch

from conftest import DEBUG_RECIPE
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.registry import ConfigError


def trainer_for(tmp_path, tiny_data_root, *overrides):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={tiny_data_root}",
                                     f"run.dir={tmp_path / 'run'}", "train.progress=false",
                                     *overrides])
    return build_trainer(cfg)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_accumulation_equals_the_larger_batch(tmp_path, tiny_data_root):
    """batch 4 x accum 2 takes the same samples per optimizer step as batch 8, and the loss is
    scaled so the gradients agree; drop path is off, as randomness would differ per batch.
    SGD, because Adam turns the float noise of the (mathematically zero) key-bias gradient
    into full-size steps, which would compare rounding, not accumulation."""
    common = ["train.epochs=2", "model.drop_path_rate=0.0", "data.val=null",
              "optimizer.type=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.9"]
    a = trainer_for(tmp_path / "a", tiny_data_root, *common, "data.batch_size=8")
    init = params(a)
    a.fit()
    b = trainer_for(tmp_path / "b", tiny_data_root, *common, "data.batch_size=4",
                    "train.accum_steps=2")
    b.fit()
    assert a.step == b.step == 6  # 24 clips / 8 per step x 2 epochs
    pa, pb = params(a), params(b)
    assert not torch.equal(pa["head.weight"], init["head.weight"])  # it trained
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=1e-5, msg=k)


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny_data_root):
    t = trainer_for(tmp_path / "bf", tiny_data_root, "train.amp=bf16", "train.epochs=1")
    before = params(t)
    metrics = t.fit()
    assert "val/acc1" in metrics
    assert any(not torch.equal(before[k], v) for k, v in params(t).items())


@pytest.mark.parametrize("clip", ["1.0", "null"])
def test_fp16_overflow_is_skipped_by_the_scaler_and_counted_not_a_nan_stop(tmp_path,
                                                                           tiny_data_root, clip):
    """An oversized initial loss scale emulates fp16 overflow (CPU GradScaler, the same code
    as CUDA's): the first steps' gradients are inf. With `nan_guard: stop` (the default) the
    run must finish: each overflow step skipped, the scale halved, the count logged."""
    init_scale = 2.0 ** 20
    t = trainer_for(tmp_path / clip, tiny_data_root, "train.amp=fp16", "train.device=cpu",
                    f"train.fp16_init_scale={init_scale}", f"train.clip_grad={clip}",
                    "train.epochs=2", "data.val=null")
    before = params(t)
    t.fit()
    assert t.step == 12
    n = t.overflow_steps
    print(f"clip_grad={clip}: {n} of 12 steps overflowed and were skipped")
    assert 0 < n < 12  # some skipped, the rest trained
    assert t.scaler.get_scale() == init_scale * 0.5 ** n  # lowered once per overflow, no growth
    assert any(not torch.equal(before[k], v) for k, v in params(t).items())
    rows = [json.loads(x) for x in (tmp_path / clip / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/overflow_steps"] for r in rows if "train/overflow_steps" in r]
    assert logged and logged[-1] == n and logged == sorted(logged)
    saved = torch.load(tmp_path / clip / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["trainer"]["overflow_steps"] == n


def test_fp16_overflow_on_one_rank_is_agreed(tmp_path, tiny_data_root, monkeypatch):
    """With FSDP2 each rank unscales its own gradient shard: an overflow seen by another rank
    (the agreed flag of the guard's all-reduce) must make this rank's scaler skip and back off
    too. Emulated by an all-reduce that reports an overflow from 'another rank' at step 1."""
    from tubelet import distributed as dist
    t = trainer_for(tmp_path, tiny_data_root, "train.amp=fp16", "train.device=cpu",
                    "train.epochs=1", "data.val=null")
    real = dist.all_reduce_max

    def other_rank_overflowed(flags):
        flags = real(flags)
        if t.step == 1:
            flags[2] = 1.0  # slot 2: some rank's fp16 gradients overflowed
        return flags
    monkeypatch.setattr(dist, "all_reduce_max", other_rank_overflowed)
    updates = []
    step = t.optimizer.step
    t.optimizer.step = lambda *a, **k: (updates.append(t.step), step(*a, **k))[1]
    t.fit()
    assert t.overflow_steps == 1 and 1 not in updates and updates == [0, 2, 3, 4, 5]
    assert t.scaler.get_scale() == 2.0 ** 15


def test_lr_follows_warmup_and_cosine_per_step(tmp_path, tiny_data_root):
    t = trainer_for(tmp_path / "lr", tiny_data_root, "train.epochs=2", "data.val=null",
                    "schedule.min_lr=1e-5")
    seen = []
    step = t.train_step

    def recording_step(batch):
        stepped = step(batch)
        seen.append(t.optimizer.param_groups[0]["lr"])
        return stepped
    t.train_step = recording_step
    t.fit()
    assert seen[0] == 0.0  # warmup starts at 0 (step 0 of 6 warmup steps)
    assert seen[5] == pytest.approx(1e-3 * 5 / 6)
    assert seen[6] == pytest.approx(1e-3)  # end of warmup: the peak
    assert seen[-1] < 1e-4 and all(a >= b for a, b in zip(seen[6:], seen[7:]))
