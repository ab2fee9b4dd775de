from pathlib import Path

import pytest

from tubelet.config import load_config, parse_override
from tubelet.registry import ConfigError

MINIMAL = "model: {type: vit}\ntask: {type: classification, num_classes: 2}\noptimizer: {type: sgd, lr: 0.1}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_is_relative_deep_merged_and_lists_replace(tmp_path):
    write(tmp_path / "bases" / "root.yaml", MINIMAL + "train: {epochs: 5, clip_grad: 1.0}\n"
          "data: {batch_size: 8, train: {type: x, transforms: [{type: a}, {type: b}]}}\n")
    write(tmp_path / "bases" / "mid.yaml", "base: root.yaml\ntrain: {epochs: 7}\n")
    leaf = write(tmp_path / "leaf.yaml", "base: bases/mid.yaml\n"
                 "data: {train: {transforms: [{type: c}]}}\n")
    cfg = load_config(leaf)
    assert cfg["train"] == {"epochs": 7, "clip_grad": 1.0}  # deep merge across the chain
    assert cfg["data"]["train"]["transforms"] == [{"type": "c"}]  # a list replaces, not appends
    assert cfg["data"]["batch_size"] == 8
    assert "base" not in cfg


def test_overrides_are_yaml_typed_and_interpolation_resolves_after_them(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL + "run: {name: a}\nx: {n: 1}\n".replace("x:", "train:")
                 .replace("{n: 1}", "{epochs: 1}"))
    cfg = load_config(path, ["train.epochs=3", "optimizer.lr=1e-3", "train.amp=bf16",
                             "train.clip_grad=null", "task.num_classes=${train.epochs}"])
    assert cfg["train"] == {"epochs": 3, "amp": "bf16", "clip_grad": None}
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["optimizer"]["lr"], float)
    assert cfg["task"]["num_classes"] == 3
    assert cfg["run"] == {"name": "a", "dir": "runs/a"}


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL)
    with pytest.raises(ConfigError, match=r"^modle: unknown key; did you mean 'model'\?$"):
        load_config(path, ["modle.depth=3"])


def test_python_tags_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.yaml",
                 MINIMAL + f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml:4: refused YAML tag"):
        load_config(path)
    assert not marker.exists()


def test_base_cycle_and_missing_files_are_user_errors(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_interpolation_names_the_key(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL + "seed: ${nothing.here}\n")
    with pytest.raises(ConfigError, match="^seed: "):
        load_config(path)


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_malformed_overrides(text):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override(text)
