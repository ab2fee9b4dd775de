"""Trainer behaviour in-process on the debug recipe: accumulation, AMP, schedule, best."""
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


def test_bf16_autocast_trains_on_cpu_and_fp16_is_refused(tmp_path, tiny_data_root):
    t = trainer_for(tmp_path / "bf", tiny_data_root, "train.amp=bf16", "train.epochs=1")
    before = params(t)
    metrics = t.fit()
    assert "val/acc1" in metrics
    assert any(not torch.equal(before[k], v) for k, v in params(t).items())
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        trainer_for(tmp_path / "fp", tiny_data_root, "train.amp=fp16", "train.device=cpu")


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
