"""Full validation (tubelet/validate.py): every bad value of issue 10 exits 2 with its one line
and writes nothing; a property test of random recipe mutations; the schema cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from tests.tools.bad_inputs import BAD_INPUTS
from tests.tools.mutate import justify, run_mutations
from tubelet import validate, validate_schema
from tubelet.cli import main
from tubelet.registry import Range


def files_under(path) -> set:
    return {p.relative_to(path) for p in path.rglob("*")}


@pytest.mark.parametrize("recipe,overrides,expected", BAD_INPUTS,
                         ids=[" ".join(o)[:40] for _, o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(recipe, overrides, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", str(REPO / "configs" / recipe), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {expected}"]
    assert files_under(tmp_path) == set()


def test_train_refuses_before_writing_anything_and_without_traceback(tmp_path):
    """Through real processes: `train` answers the same line and leaves no run dir, no data."""
    for recipe, overrides, expected in (BAD_INPUTS[0], BAD_INPUTS[6], BAD_INPUTS[19]):
        proc = subprocess.run([sys.executable, "-m", "tubelet.cli", "train",
                               str(REPO / "configs" / recipe), *overrides], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [f"error: {expected}"], \
            proc.stderr
        assert files_under(tmp_path) == set()


def test_random_mutations_of_every_recipe_give_no_traceback_and_no_hang(tmp_path):
    """300 seeded mutations (15 per shipped recipe: keys deleted, misspelt or moved, wrong
    types, negative, huge, NaN, null) through `tubelet config`: each is refused with one line
    or is still a valid recipe for a reason in `tests/tools/mutate.JUSTIFIED`."""
    results = run_mutations(tmp_path, per_recipe=15)
    assert len(results) >= 300
    for recipe, what, rc, err in results:
        assert rc in (0, 2), (recipe, what, err)
        if rc == 2:
            assert len(err.splitlines()) == 1 and err.startswith("error: "), (recipe, what, err)
        else:
            assert justify(what), f"{recipe}: {what} accepted without a reason"
    assert sum(rc == 2 for *_, rc, _ in results) > 0.8 * len(results)
    # a sample through real processes: the same answer, and nothing else on stderr
    mutants = sorted(tmp_path.glob("m*_*.yaml"))
    assert len(mutants) == len(results)
    for path in mutants[::60]:
        n, i = map(int, path.stem[1:].split("_"))
        recipe, what, rc, err = results[n * 15 + i]
        proc = subprocess.run([sys.executable, "-m", "tubelet.cli", "config", str(path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stderr) == (rc, err), (recipe, what)


def test_schema_cache_matches_the_live_registries_and_skips_torch(tmp_path):
    env = {**os.environ, "TUBELET_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import json, sys; from tubelet import build, validate_schema; "
            "live = build.schema(); build.save_schema(live); "
            "print(json.loads(json.dumps(live)) == validate_schema.cached_schema())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    # with the cache, a bad value is answered before torch loads; a good recipe is printed
    # after the model was built on the meta device, as train builds it before its run dir
    code = ("import sys; from tubelet.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, file=sys.stderr)")
    for args, want in ((["optimizer.lr=abc"], "2 False"), ([], "0 True")):
        proc = subprocess.run([sys.executable, "-c", code, "config",
                               str(REPO / "configs" / "quickstart.yaml"), *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.stderr.splitlines()[-1] == want, proc.stderr


def test_range_and_choice_tables_name_real_parameters_and_match_the_code():
    """No entry of RANGES/PATHS is a typo, and the choices repeat the code's own lists."""
    from tubelet import build, distributed
    from tubelet.data import decode, sampling
    from tubelet.engine import guard, parallel, trainer
    schema = build.schema()
    names = {n for kind in schema["registries"].values() for spec in kind.values()
             for n in spec["params"]} | {n for spec in schema["sections"].values()
                                         for n in spec["params"]}
    for key in list(validate.RANGES) + list(validate.PATHS):
        assert key.split(".")[-1] in names, key
    from tubelet.data.synth import DIRECTIONS
    assert validate.RANGES["dataset.synthetic_actions.num_classes"] == Range(2, 2 * len(DIRECTIONS))
    choices = {k: set(v.choices) for k, v in validate.RANGES.items() if hasattr(v, "choices")}
    assert choices["amp"] == set(trainer.AMP_DTYPES)
    assert choices["nan_guard"] == set(guard.NAN_POLICIES)
    assert choices["strategy"] == set(parallel.STRATEGIES)
    assert choices["param_dtype"] == set(parallel.PARAM_DTYPES)
    assert choices["distributed.backend"] == set(distributed.BACKENDS)
    assert choices["backend"] == set(decode.BACKENDS)
    assert choices["sampling"] == set(sampling.SAMPLINGS)


def test_annotated_constraints_in_a_plugin_signature():
    from typing import Annotated  # noqa: F401 - the annotation below is evaluated as text
    from tubelet.registry import ConfigError, Min, Registry  # noqa: F401

    class Plugin:
        def __init__(self, *, width: "Annotated[int, Min(8)]" = 8, name: str = "a") -> None: ...

    reg = Registry("model")
    reg.add("plugin", Plugin)
    schema = {"registries": {"model": {"plugin": validate_schema.describe(Plugin)}}, "sections": {}}
    check = validate._Check(schema, check_paths=True)
    check.node({"type": "plugin", "width": 16}, "model", "model")
    with pytest.raises(ConfigError, match=r"^model.width: must be >= 8, got 4$"):
        check.node({"type": "plugin", "width": 4}, "model", "model")
    with pytest.raises(ConfigError, match=r"^model.name: expected str, got integer 3$"):
        check.node({"type": "plugin", "name": 3}, "model", "model")
    assert json.dumps(schema)  # plain data: it can be cached


def test_eval_does_not_need_the_train_data(tmp_path, monkeypatch):
    from tubelet import build
    from tubelet.config import load_config
    from tubelet.registry import ConfigError
    monkeypatch.chdir(tmp_path)
    (tmp_path / "val.txt").write_text("a.mp4 0\n")
    cfg = load_config(REPO / "configs" / "quickstart.yaml",
                      ["data.train={type: video_list, annotations: train.txt, num_frames: 8}",
                       "data.val={type: video_list, annotations: val.txt, num_frames: 8}",
                       "data.test=null"])
    schema = build.schema()
    validate.check_recipe(cfg, schema, train_data=False)
    with pytest.raises(ConfigError, match="^data.train.annotations: no such file 'train.txt'$"):
        validate.check_recipe(cfg, schema)
    cfg["data"]["val"]["annotations"] = "nope.txt"
    with pytest.raises(ConfigError, match="^data.val.annotations: no such file 'nope.txt'$"):
        validate.check_recipe(cfg, schema, train_data=False)


@pytest.mark.parametrize("overrides,expected", [
    (["model.global_pool=token", "model.class_token=false"],
     "model: global_pool='token' needs class_token=True; use global_pool='avg' without one"),
    (["model.dynamic_img_size=true", "data.train.num_frames=7"],
     "model: a batch of data.train's shape [2, 3, 7, 40, 40] fails: input (T,)H,W (7, 40, 40) "
     "is not divisible by the tubelet (2, 8, 8)"),
])
def test_train_builds_the_model_on_meta_and_runs_a_zero_batch_first(overrides, expected,
                                                                      tmp_path):
    """What only the model knows (a constructor's refusal, a shape that breaks the forward)
    is answered at startup, before the data or the run dir, as one line."""
    proc = subprocess.run([sys.executable, "-m", "tubelet.cli", "train",
                           str(REPO / "configs" / "quickstart.yaml"), *overrides], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"error: {expected}"], \
        proc.stderr
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("recipe", ["debug/classify_tiny.yaml", "debug/mae_pretrain_tiny.yaml",
                                    "debug/linprobe_tiny.yaml"])
def test_dry_forward_draws_no_random_numbers(recipe):
    """The debug recipes' losses stay bit-identical: no RNG stream moves."""
    import random

    import numpy as np
    import torch

    from tubelet import build
    from tubelet.config import load_config
    cfg = load_config(REPO / "configs" / recipe)
    schema = build.validate_config(cfg)
    before = (torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    build.dry_forward(cfg, schema)
    assert torch.equal(before[0], torch.random.get_rng_state())
    assert before[1] == random.getstate()
    assert (before[2] == np.random.get_state()[1]).all()


@pytest.mark.parametrize("kwargs", [{"clip_grad": -1.0}, {"clip_grad": 0.0}, {"epochs": 0},
                                    {"eval_interval": 0}])
def test_trainer_keeps_its_own_checks_for_direct_callers(kwargs):
    """Defence in depth: the Trainer built from Python (no recipe) refuses them too; a
    negative clip_grad trained by gradient ascent."""
    import torch

    from tubelet.engine.trainer import Trainer
    from tubelet.registry import ConfigError
    runtime = dict.fromkeys(("model", "task", "optimizer", "train_loader", "train_sampler",
                             "val_loader", "base_lr", "logger"))
    with pytest.raises(ConfigError, match="clip_grad > 0 or null"):
        Trainer(**runtime, run_dir="unused", device=torch.device("cpu"), **kwargs)
