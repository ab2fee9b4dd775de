"""The CLI contract, through real subprocesses: exit codes, one-line errors, no tracebacks."""
import json

import pytest

from conftest import DEBUG_RECIPE, REPO, run_tubelet

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def assert_user_error(proc, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {expected}"]


def test_typo_in_override_exits_2_with_did_you_mean(tmp_path):
    proc = run_tubelet("train", str(QUICKSTART), "modle.depth=3", cwd=tmp_path, check=False)
    assert_user_error(proc, "modle: unknown key; did you mean 'model'?")
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_nested_typo_and_unknown_type(tmp_path):
    proc = run_tubelet("config", str(QUICKSTART), "model.dpeth=3", cwd=tmp_path, check=False)
    assert_user_error(proc, "model.dpeth: unknown key; did you mean 'depth'?")
    proc = run_tubelet("config", str(QUICKSTART), "optimizer.type=adamww", cwd=tmp_path, check=False)
    assert_user_error(proc, "optimizer.type: unknown optimizer 'adamww'; did you mean 'adamw'?")


def test_missing_data_root_and_missing_resume_checkpoint(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {batch_size: 2, train: {type: hmdb51, root: x/}}\n"
                      "model: {type: vit, img_size: 16, patch_size: 8, depth: 1, embed_dim: 8,"
                      " num_heads: 1, num_classes: 2}\n"
                      "task: {type: classification, num_classes: 2}\n"
                      "optimizer: {type: sgd, lr: 0.1}\n")
    proc = run_tubelet("train", str(recipe), cwd=tmp_path, check=False)
    assert_user_error(proc, "data.train.root: no such directory 'x'")
    proc = run_tubelet("train", str(DEBUG_RECIPE), "resume=y.pt", cwd=tmp_path, check=False)
    assert_user_error(proc, "resume: checkpoint 'y.pt' not found")
    proc = run_tubelet("train", str(DEBUG_RECIPE), "resume=autp", cwd=tmp_path, check=False)
    assert_user_error(proc, "resume: checkpoint 'autp' not found; did you mean 'auto'?")


def test_python_tag_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"base: {DEBUG_RECIPE}\nseed: !!python/object/apply:os.system ['touch {marker}']\n")
    proc = run_tubelet("train", str(recipe), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "evil.yaml:2: refused YAML tag" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_config_prints_the_resolved_recipe(tmp_path):
    proc = run_tubelet("config", str(QUICKSTART), "model.depth=2", cwd=tmp_path)
    assert "depth: 2" in proc.stdout and "${" not in proc.stdout
    assert "dir: runs/quickstart" in proc.stdout


@pytest.mark.slow
def test_train_then_eval_a_file_a_run_dir_and_an_export_alike(tmp_path, tiny_data_root, capsys,
                                                             monkeypatch):
    """The last epoch is evaluated although eval_interval does not divide it, and `eval` gives
    the same accuracy from the checkpoint file, the run directory and a safetensors export.
    Train and export run as the real command; the three evals in this process (the same
    `tubelet.cli.main`, three interpreter starts fewer: eval's exit codes are tested above)."""
    from tubelet import cli
    run_tubelet("train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}", "run.dir=r",
                "train.epochs=2", "train.eval_interval=5", cwd=tmp_path)
    run_dir = tmp_path / "r"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "log.txt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "val/acc1" in row]
    assert [row["epoch"] for row in evals] == [2]  # only the last epoch, 1-based
    run_tubelet("export", str(run_dir), "w.safetensors", cwd=tmp_path)
    import torch
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the worker's stay its own
    capsys.readouterr()
    for checkpoint in (run_dir / "checkpoints" / "last.pt", run_dir, tmp_path / "w.safetensors"):
        assert cli.main(["eval", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                         f"checkpoint={checkpoint}"]) == 0
        out = capsys.readouterr().out
        assert json.loads(out)["val/acc1"] == evals[-1]["val/acc1"], checkpoint


def test_eval_without_a_checkpoint_gets_the_usage_line(tmp_path):
    for args, command in (([], ""), (["eval"], "eval"), (["eval", str(QUICKSTART)], "eval"),
                          (["export", "x"], "export"), (["data", "synth"], "data synth")):
        proc = run_tubelet(*args, cwd=tmp_path, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"usage: tubelet {command}".rstrip()), lines
        assert lines[-1].startswith(f"tubelet {command}".rstrip() + ": error:"), lines
    proc = run_tubelet("eval", str(QUICKSTART), cwd=tmp_path, check=False)
    assert "checkpoint=PATH is required" in proc.stderr
    proc = run_tubelet("eval", str(QUICKSTART), "checkpoint=nowhere.pt", cwd=tmp_path, check=False)
    assert_user_error(proc, "checkpoint: 'nowhere.pt' not found")
    (tmp_path / "run").mkdir()
    proc = run_tubelet("eval", str(QUICKSTART), "checkpoint=run", cwd=tmp_path, check=False)
    assert_user_error(proc, "checkpoint: run directory 'run' has no checkpoints/last.pt "
                            "(did its training finish?)")


@pytest.mark.parametrize("command", ["train", "eval", "config", "export", "data synth",
                                     "data check"])
def test_command_help_shows_only_that_command(tmp_path, command):
    proc = run_tubelet(*command.split(), "--help", cwd=tmp_path)
    assert proc.stdout.startswith(f"usage: tubelet {command} [-h]")
    others = {"train", "eval", "config", "export", "synth", "check"} - set(command.split())
    assert not any(f"tubelet {other}" in proc.stdout for other in others), proc.stdout
    if command == "data synth":  # every default is shown
        for default in ("(default: 8)", "(default: 80)", "(default: 20)", "(default: 40)"):
            assert default in proc.stdout


def test_version_is_the_package_version(tmp_path):
    import tomllib
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    proc = run_tubelet("--version", cwd=tmp_path)
    assert proc.stdout.strip() == f"tubelet {version}"


def test_data_synth_defaults_are_the_quickstarts():
    import inspect

    from tubelet.cli import _parser
    from tubelet.config import load_config
    from tubelet.data.datasets.synthetic import SyntheticActions
    args = _parser().parse_args(["data", "synth", "x"])
    node = load_config(QUICKSTART)["data"]["train"]
    defaults = {k: p.default for k, p in inspect.signature(SyntheticActions).parameters.items()}
    want = {k: node.get(k, defaults[k]) for k in ("num_classes", "num_train_per_class",
                                                 "num_test_per_class", "size", "data_seed")}
    assert want == {"num_classes": 8, "num_train_per_class": 80, "num_test_per_class": 20,
                    "size": 40, "data_seed": 0}
    assert {**vars(args), "data_seed": args.seed} == {**vars(args), **want}


def test_data_synth_writes_the_hmdb51_layout(tmp_path):
    run_tubelet("data", "synth", str(tmp_path / "s"), "--num-classes", "2",
                "--num-train-per-class", "1", "--num-test-per-class", "1", "--size", "16",
                cwd=tmp_path)
    assert len(list((tmp_path / "s" / "videos").glob("*/*.mp4"))) == 4
    assert len(list((tmp_path / "s" / "splits").glob("*_test_split1.txt"))) == 2
