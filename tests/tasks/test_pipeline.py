"""The debug chain end to end, in process: MAE pretraining, then finetuning and a linear probe
whose `model.pretrained` names the pretraining run directory."""
import json

import pytest
import torch

from tubelet.build import build_trainer, evaluate_checkpoint
from tubelet.config import load_config
from conftest import REPO

pytestmark = pytest.mark.slow


def train(name, root, run_dir, *extra):
    cfg = load_config(REPO / "configs" / "debug" / f"{name}.yaml",
                      [f"data.train.root={root}", f"run.dir={run_dir}", "train.epochs=1",
                       "train.progress=false", *extra])
    return build_trainer(cfg).fit()


def test_pretrain_then_finetune_and_linprobe_from_the_run_directory(tmp_path, tiny_data_root):
    pre = tmp_path / "pre"
    metrics = train("mae_pretrain_tiny", tiny_data_root, pre)
    assert 0.0 < metrics["val/loss"] < 5.0
    encoder = torch.load(pre / "checkpoints" / "last.pt", weights_only=True)["model"]
    ft = train("finetune_tiny", tiny_data_root, tmp_path / "ft", f"model.pretrained={pre}")
    assert {"val/acc1", "val/mean_class_acc", "val/ema_acc1"} <= set(ft)
    # step 0 of the finetune run is the pretrained encoder: compare a weight layer decay barely moved
    probe = train("linprobe_tiny", tiny_data_root, tmp_path / "lp", f"model.pretrained={pre}")
    assert "val/acc1" in probe
    state = torch.load(tmp_path / "lp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in ("blocks.0.attn.qkv.weight", "norm.weight"):  # frozen: still the pretrained weights
        assert torch.equal(state[f"backbone.{key}"], encoder[f"encoder.{key}"]), key
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/ema_acc1" in r for r in rows)
    # multi-view test of the finetuned model: 2 clips per video, scored once per video
    cfg = load_config(REPO / "configs" / "debug" / "finetune_tiny.yaml",
                      [f"data.train.root={tiny_data_root}", "data.val.temporal_views=2",
                       f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'last.pt'}"])
    views = evaluate_checkpoint(cfg)
    assert set(views) == {"val/acc1", "val/mean_class_acc"}
    assert views["val/acc1"] * 12 == round(views["val/acc1"] * 12)  # 12 test videos, not 24 clips
