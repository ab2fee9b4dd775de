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
def test_train_then_eval_reports_the_same_accuracy(tmp_path, tiny_data_root):
    run_tubelet("train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}", "run.dir=r",
                "train.epochs=1", cwd=tmp_path)
    run_dir = tmp_path / "r"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "log.txt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    proc = run_tubelet("eval", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                       f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", cwd=tmp_path)
    assert json.loads(proc.stdout)["val/acc1"] == last["val/acc1"]


def test_data_synth_writes_the_hmdb51_layout(tmp_path):
    run_tubelet("data", "synth", str(tmp_path / "s"), "--num-classes", "2",
                "--num-train-per-class", "1", "--num-test-per-class", "1", "--size", "16",
                cwd=tmp_path)
    assert len(list((tmp_path / "s" / "videos").glob("*/*.mp4"))) == 4
    assert len(list((tmp_path / "s" / "splits").glob("*_test_split1.txt"))) == 2
