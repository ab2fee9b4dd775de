"""Synthetic data is written only where asked: at the quickstart's root or with `generate:
true`; any other missing root is a one-line user error that writes nothing."""
import pytest

from conftest import REPO, run_tubelet
from tubelet.data.datasets.synthetic import DEFAULT_ROOT, SyntheticActions
from tubelet.registry import ConfigError

TINY = dict(num_classes=2, num_train_per_class=1, num_test_per_class=1, size=16, video_frames=4,
            num_frames=2, stride=1)


def test_only_the_default_root_or_generate_true_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for generate in (None, False):  # a root that is not the default: an error, nothing written
        with pytest.raises(ConfigError, match=r"^root: no synthetic dataset at 'mistyped'"):
            SyntheticActions("mistyped", generate=generate, **TINY)
        assert not (tmp_path / "mistyped").exists()
    with pytest.raises(ConfigError, match=r"root: .*\(generate: false\)"):
        SyntheticActions(DEFAULT_ROOT, generate=False, **TINY)
    assert not (tmp_path / "data").exists()
    assert len(SyntheticActions(DEFAULT_ROOT, **TINY)) == 2  # the default root: written
    assert len(SyntheticActions(str(tmp_path / DEFAULT_ROOT), **TINY)) == 2  # same dir, absolute
    assert len(SyntheticActions("elsewhere", generate=True, **TINY)) == 2
    # an existing synthetic root is read whatever `generate` says, and still checked
    assert len(SyntheticActions("elsewhere", generate=False, **TINY)) == 2
    with pytest.raises(ConfigError, match="made with other parameters"):
        SyntheticActions("elsewhere", generate=False, **{**TINY, "num_classes": 4})
    with pytest.raises(ConfigError, match="generate: expected true or false"):
        SyntheticActions("elsewhere", generate="yes", **TINY)


def test_a_mistyped_root_on_the_command_line_exits_2(tmp_path):
    proc = run_tubelet("train", str(REPO / "configs" / "quickstart.yaml"),
                       "data.train.root=data/synth_actoins", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.train.root: no synthetic dataset at 'data/synth_actoins' (one is written "
        "only at data/synth_actions or with generate: true)")
    assert not (tmp_path / "data").exists()
