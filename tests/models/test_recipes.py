"""Every shipped recipe (a recursive glob over configs/) opens with its command, validates, and
builds its model (on the meta device: no weights, no data), task and optimizer."""
from pathlib import Path

import pytest
import torch

from tubelet.build import build_model, build_optimizer, validate_config
from tubelet.config import load_config
from tubelet.registry import TASKS, build

REPO = Path(__file__).resolve().parents[2]
# configs/experiments/ holds `tubelet run` experiments, not recipes: tests/test_experiment.py
RECIPES = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.relative_to(REPO / "configs").parts[0] != "experiments")


def test_the_zoo_is_shipped():
    names = {str(p.relative_to(REPO / "configs")) for p in RECIPES}
    assert {"videomae/pretrain_vit_base_k400.yaml", "mae/linprobe_vit_base_in1k.yaml",
            "debug/mae_pretrain_tiny.yaml", "debug/finetune_tiny.yaml",
            "debug/linprobe_tiny.yaml", "essmc2/finetune_r3d50_hmdb51.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_recipe_validates_and_builds(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and str(path.relative_to(REPO)) in first, first  # its command
    cfg = load_config(path)
    validate_config(cfg, check_paths=False)  # the paper datasets and weights are not shipped
    with torch.device("meta"):
        model = build_model(cfg, load_pretrained=False)
        build_optimizer(cfg["optimizer"], model, total_batch_size=cfg["data"]["batch_size"])
    build(cfg["task"], TASKS)
