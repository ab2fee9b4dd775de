"""`tubelet run EXPERIMENT.yaml`: reading and validating an experiment, what counts as a finished
stage, experiment.json, signal forwarding; and one real experiment SIGKILLed in its finetune
stage and run again (slow): pretrain is not repeated, finetune resumes exactly, eval runs."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_states_equal, run_tubelet, tubelet_cmd
from tubelet import cli
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.experiment import (Report, Stage, _Forwarder, check_experiment, finished,
                                load_experiment)
from tubelet.registry import ConfigError

DEBUG = REPO / "configs" / "debug"
COMMANDS = ("train", "eval", "test")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def chain(tmp_path: Path, extra: str = "") -> Path:
    return write(tmp_path / "exp.yaml", f"""
stages:
  pretrain:
    recipe: {DEBUG}/mae_pretrain_tiny.yaml
  finetune:
    recipe: {DEBUG}/finetune_tiny.yaml
    overrides:
      model.pretrained: ${{stages.pretrain.run_dir}}
      train.epochs: 3
  evaluate:
    command: test
    recipe: {DEBUG}/finetune_tiny.yaml
    overrides: {{checkpoint: "${{stages.finetune.run_dir}}/checkpoints/best.pt",
                data.test: '\\${{data.val}}'}}
{extra}""")


def test_stages_in_order_with_their_run_dirs_and_links(tmp_path):
    exp_dir, stages = load_experiment(chain(tmp_path), ["dir=out", "train.device=cpu",
                                                        "stages.finetune.train.epochs=4"],
                                      commands=COMMANDS)
    assert exp_dir == Path("out") and [s.name for s in stages] == ["pretrain", "finetune",
                                                                     "evaluate"]
    pre, fine, ev = stages
    assert [s.run_dir for s in stages] == [Path("out/pretrain"), Path("out/finetune"),
                                           Path("out/evaluate")]
    assert pre.argv[:5] == [sys.executable, "-m", "tubelet.cli", "train",
                            str(DEBUG / "mae_pretrain_tiny.yaml")]
    # the file's overrides, the command line's for every stage, then this stage's own
    assert fine.overrides == ['model.pretrained="out/pretrain"', "train.epochs=4",
                              'train.device="cpu"', 'run.dir="out/finetune"', "resume=auto"]
    assert ev.command == "test" and "resume=auto" not in ev.overrides
    assert 'checkpoint="out/finetune/checkpoints/best.pt"' in ev.overrides
    check_experiment(stages, check_paths=False)
    assert fine.cfg["model"]["pretrained"] == "out/pretrain" and fine.cfg["train"]["epochs"] == 4
    assert fine.cfg["run"]["dir"] == "out/finetune" and fine.cfg["resume"] == "auto"
    assert (fine.epochs, fine.patience, fine.has_test) == (4, None, False)


def test_defaults_dir_from_the_file_name_and_recipes_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub" / "my_exp.yaml",
                 "stages:\n  a: {recipe: ../r.yaml}\n")
    exp_dir, (a,) = load_experiment(path, commands=COMMANDS)
    assert exp_dir == Path("runs/my_exp") and a.run_dir == Path("runs/my_exp/a")
    assert a.recipe == tmp_path / "r.yaml" and a.command == "train"


@pytest.mark.parametrize("text,overrides,message", [
    ("stages: {a: {recipe: r.yaml}}\nstage: 1", [], "stage: unknown key; did you mean 'stages'"),
    ("stages: {}", [], "stages: expected a mapping"),
    ("stages: {a: {recipe: r.yaml, overides: {}}}", [], "stages.a.overides: unknown key; did "
                                                        "you mean 'overrides'"),
    ("stages: {a: {recipe: r.yaml, command: tset}}", [], "stages.a.command: unknown 'tset'"),
    ("stages: {a: {command: eval}}", [], "stages.a.recipe: expected a recipe path"),
    ("stages: {a: {recipe: r.yaml, overrides: [x=1]}}", [], "stages.a.overrides: expected a "
                                                           "mapping"),
    ("stages: {a: {recipe: r.yaml, overrides: {run.dir: x}}}", [], "stages.a.overrides.run.dir"),
    ("stages: {a: {recipe: r.yaml, overrides: {resume: restart}}}", [],
     "stages.a.overrides.resume: tubelet run resumes"),
    ("stages: {a: {recipe: r.yaml, overrides: {x: '${stages.b.run_dir}'}}}", [], "stages.b"),
    ("stages: {a: {recipe: r.yaml}}", ["stages.b.train.epochs=1"], "no stage 'b'"),
    ("stages: {a: {recipe: r.yaml}}", ["dri=x"], "dri: unknown key; did you mean 'dir'"),
])
def test_a_bad_experiment_is_one_line_naming_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_experiment(write(tmp_path / "e.yaml", text), overrides, commands=COMMANDS)
    assert message in str(e.value), str(e.value)


def test_a_stage_may_not_name_a_later_stage_or_share_a_run_dir(tmp_path):
    path = write(tmp_path / "e.yaml", f"""
stages:
  a: {{recipe: {DEBUG}/classify_tiny.yaml, overrides: {{model.pretrained: "${{stages.b.run_dir}}"}}}}
  b: {{recipe: {DEBUG}/classify_tiny.yaml}}
""")
    with pytest.raises(ConfigError, match="stages.a: model.pretrained names the run dir of "
                                          "stage 'b', which does not run before it"):
        check_experiment(load_experiment(path, commands=COMMANDS)[1], check_paths=False)
    path = write(tmp_path / "e.yaml", f"""
stages:
  a: {{recipe: {DEBUG}/classify_tiny.yaml}}
  b: {{recipe: {DEBUG}/classify_tiny.yaml, run_dir: "${{stages.a.run_dir}}"}}
""")
    with pytest.raises(ConfigError, match="stages.b.run_dir: .* is also the run dir of stage 'a'"):
        check_experiment(load_experiment(path, commands=COMMANDS)[1], check_paths=False)


def test_a_typo_in_the_last_stage_exits_2_before_the_first_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = chain(tmp_path)
    text = path.read_text().replace("overrides: {checkpoint:", "overrides: {optimizer.lrr: 1, "
                                    "checkpoint:")
    assert cli.main(["run", str(write(path, text))]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == \
        "error: stages.evaluate: optimizer.lrr: unknown key; did you mean 'lr'?", err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_the_shipped_experiments_validate(capsys):
    for path in sorted((REPO / "configs" / "experiments").glob("*.yaml")):
        assert path.read_text().startswith(f"# tubelet run configs/experiments/{path.name}\n")
        _, stages = load_experiment(path, commands=COMMANDS)
        check_experiment(stages, check_paths=False)  # K400's videos are not here
        for stage in stages[1:]:  # each stage from one before it; a baseline from none
            links = [o for o in stage.overrides
                     if not o.startswith("run.dir=") and ("/pretrain" in o or "/finetune" in o)]
            assert len(links) == (0 if stage.name.endswith("random_init") else 1), (path, links)


def _checkpoint(run_dir: Path, **trainer) -> None:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"trainer": trainer, "model": {}}, run_dir / "checkpoints" / "last.pt")


def test_finished_is_read_from_the_run_dir(tmp_path):
    stage = Stage("a", "train", tmp_path / "r.yaml", [], tmp_path / "a", epochs=4, patience=2)
    assert not finished(stage)  # no checkpoint
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "a" / "checkpoints" / "last.pt").write_bytes(b"torn")
    assert not finished(stage)  # unreadable: the stage's own resume=auto falls back
    _checkpoint(stage.run_dir, epoch=3, early_stop={"bad_evals": 1, "best": 0.5})
    assert not finished(stage)
    _checkpoint(stage.run_dir, epoch=3, early_stop={"bad_evals": 2, "best": 0.5})
    assert finished(stage)  # stopped early
    stage.patience = 3  # more patience now: it goes on
    assert not finished(stage)
    _checkpoint(stage.run_dir, epoch=4, early_stop=None)
    assert finished(stage)
    stage.has_test = True  # fit ends with the test: its results are part of it
    assert not finished(stage)
    (stage.run_dir / "test_results.json").write_text("{}")
    assert finished(stage)
    ev = Stage("e", "eval", tmp_path / "r.yaml", [], tmp_path / "e")
    assert not finished(ev)
    ev.run_dir.mkdir()
    ev.result_file.write_text('{"val/acc1": 0.5}')
    assert finished(ev) and ev.result_file.name == "eval_results.json"


def test_experiment_json_is_rewritten_whole_and_wall_time_adds_up(tmp_path):
    stages = [Stage("a", "train", tmp_path / "r.yaml", [], tmp_path / "a")]
    report = Report(tmp_path / "experiment.json", experiment="e.yaml", stages=stages,
                    enabled=True)
    report.update(stages[0], status="done", add_wall_s=1.5, metrics={"val/acc1": 1.0})
    report = Report(tmp_path / "experiment.json", experiment="e.yaml", stages=stages,
                    enabled=True)  # a second `tubelet run`
    report.update(stages[0], status="done", add_wall_s=1.0)
    report.finish("done")
    data = json.loads((tmp_path / "experiment.json").read_text())
    assert data["status"] == "done" and data["stages"][0]["wall_s"] == 2.5
    assert not list(tmp_path.glob(".*.tmp"))


def test_sigterm_to_the_runner_reaches_the_stage():
    child = [sys.executable, "-c", "import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
             "print('ready', flush=True)\ntime.sleep(60)"]
    with _Forwarder() as forwarder:
        forwarder.child = subprocess.Popen(child, stdout=subprocess.PIPE, text=True)
        assert forwarder.child.stdout.readline() == "ready\n"
        os.kill(os.getpid(), signal.SIGTERM)  # to this process only, as a scheduler's kill
        assert forwarder.child.wait(timeout=30) == 75 and forwarder.received == "SIGTERM"


@pytest.mark.slow
def test_an_experiment_killed_in_finetune_resumes_it_exactly(tmp_path, tiny_data_root,
                                                              monkeypatch):
    """SIGKILL to the whole process group (runner and stage) inside finetune, then the same
    command: pretrain untouched, finetune bit-identical to an uninterrupted run, eval done."""
    path = chain(tmp_path)
    args = ["run", str(path), f"data.train.root={tiny_data_root}", "train.progress=false",
            "stages.pretrain.train.epochs=1", "stages.pretrain.data.val=null",
            "stages.finetune.train.epochs=1",
            "stages.finetune.train.checkpoint_interval=2"]
    runner = subprocess.Popen(tubelet_cmd(*args), cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "runs" / "exp" / "finetune" / "checkpoints"
    try:
        deadline = time.monotonic() + 900
        while not list(ckpts.glob("step_*.pt")):
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(random.Random(0).uniform(0, 0.05))  # somewhere in a later step
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # a node lost: no stage gets to save
        runner.wait(timeout=30)
    pre = tmp_path / "runs" / "exp" / "pretrain"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in
              [pre / "metrics.jsonl", *sorted((pre / "checkpoints").iterdir())]}
    killed = json.loads((tmp_path / "runs" / "exp" / "experiment.json").read_text())
    assert [s["status"] for s in killed["stages"]] == ["done", "running", "pending"]

    run_tubelet(*args, cwd=tmp_path, timeout=900)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before}
    assert after == before and set((pre / "checkpoints").iterdir()) == \
        {p for p in before if p.parent.name == "checkpoints"}  # pretrain not run again
    report = json.loads((tmp_path / "runs" / "exp" / "experiment.json").read_text())
    assert report["status"] == "done"
    assert [s["status"] for s in report["stages"]] == ["done"] * 3
    fine, ev = report["stages"][1], report["stages"][2]
    assert fine["metrics"]["epoch"] == 1 and "val/acc1" in fine["metrics"]
    tested = json.loads((tmp_path / "runs" / "exp" / "evaluate" / "test_results.json").read_text())
    assert ev["metrics"] == tested["metrics"] and set(ev["metrics"]) >= {"test/acc1"}
    assert tested["checkpoint"].endswith("finetune/checkpoints/best.pt")

    # the same finetune, uninterrupted, from the same pretraining: the stage's own command
    # line (every override it had) with another run dir, in this process (one start less)
    recipe, *overrides = [a if not a.startswith("run.dir=") else f"run.dir={tmp_path / 'ref'}"
                          for a in fine["argv"][2:]]
    monkeypatch.chdir(tmp_path)  # model.pretrained is relative, as in the stage
    before_threads = torch.get_num_threads()
    try:
        build_trainer(load_config(recipe, overrides)).fit()
    finally:
        torch.set_num_threads(before_threads)
    assert_states_equal(torch.load(ckpts / "last.pt", weights_only=True),
                        torch.load(tmp_path / "ref" / "checkpoints" / "last.pt",
                                   weights_only=True))
