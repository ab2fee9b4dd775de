"""A key in the wrong section points to its home (tubelet/validate_homes.py): the same name in
another section before a close name in its own, at the top level and in every section and node,
from an override and from a recipe file; one line, exit 2, nothing written."""
from __future__ import annotations

import pytest

from conftest import REPO
from tubelet.cli import main

D = REPO / "configs" / "debug" / "classify_tiny.yaml"
MISPLACED = [
    # argparse habits: everything under train
    ("train.batch_size=8", "train.batch_size: unknown key; did you mean 'data.batch_size'?"),
    ("train.lr=0.001", "train.lr: unknown key; did you mean 'optimizer.lr'?"),
    ("train.weight_decay=0.05",
     "train.weight_decay: unknown key; did you mean 'optimizer.weight_decay'?"),
    # a close name in the section ('epochs') would send the user the wrong way
    ("train.warmup_epochs=1",
     "train.warmup_epochs: unknown key; did you mean 'schedule.warmup_epochs'?"),
    ("schedule.epochs=2", "schedule.epochs: unknown key; did you mean 'train.epochs'?"),
    ("data.epochs=3", "data.epochs: unknown key; did you mean 'train.epochs'?"),
    ("data.log_interval=3", "data.log_interval: unknown key; did you mean 'train.log_interval'?"),
    ("train.num_workers=2", "train.num_workers: unknown key; did you mean 'data.num_workers'?"),
    ("train.backend=nccl", "train.backend: unknown key; did you mean 'distributed.backend'?"),
    # inside a node
    ("data.train.batch_size=4",
     "data.train.batch_size: unknown key; did you mean 'data.batch_size'?"),
    ("model.lr=0.1", "model.lr: unknown key; did you mean 'optimizer.lr'?"),
    # at the top level: a section's key, or a mapping of them
    ("epochs=3", "epochs: unknown key; did you mean 'train.epochs'?"),
    ("lr=0.1", "lr: unknown key; did you mean 'optimizer.lr'?"),
    ("grad_checkpointing=true",
     "grad_checkpointing: unknown key; did you mean 'model.grad_checkpointing'?"),
    ("log.tensorboard=true", "log.tensorboard: unknown key; did you mean 'train.tensorboard'?"),
    ("trian.epochs=3", "trian.epochs: unknown key; did you mean 'train.epochs'?"),
    ("tensorbord=true", "tensorbord: unknown key; did you mean 'train.tensorboard'?"),
    # what was right before stays right: a typo of a section, of a key in its own section
    ("modle.depth=2", "modle: unknown key; did you mean 'model'?"),
    ("train.tensorbord=true", "train.tensorbord: unknown key; did you mean 'tensorboard'?"),
    ("schedule.milestone=[2]", "schedule.milestone: unknown key; did you mean 'milestones'?"),
    ("zzz=1", "zzz: unknown key"),
]


@pytest.mark.parametrize("override,expected", MISPLACED, ids=[o for o, _ in MISPLACED])
def test_a_misplaced_key_names_its_home(override, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", str(D), override]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {expected}"]
    assert not any(tmp_path.iterdir())


def test_in_a_recipe_file_and_without_a_cached_schema(tmp_path, monkeypatch, capsys):
    """The top-level hint needs the schema: with no cached copy it is built for the message."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUBELET_CACHE_DIR", str(tmp_path / "empty-cache"))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"base: {D}\nlog:\n  tensorboard: true\n")
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: log.tensorboard: unknown key; did you mean 'train.tensorboard'?"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]  # no run dir, no cache
