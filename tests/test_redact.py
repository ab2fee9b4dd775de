"""Secret redaction (tubelet/redact.py) and the environment record (tubelet/envinfo.py)."""
from __future__ import annotations

import logging
import shutil
import subprocess

import pytest

from tubelet import envinfo, redact
from tubelet.redact import MASK, redact_argv, redact_config, redact_text

ENV = {"WANDB_API_KEY": "sk-test-123456", "HF_TOKEN": "hf_abcdef", "DB_PASSWORD": "pw-9876",
       "AWS_SECRET_ACCESS_KEY": "aws/secret+key", "PATH": "/usr/bin", "SHORT_KEY": "1"}


@pytest.mark.parametrize("text, want", [
    ("https://user:hunter2@host/x", "https://user:***@host/x"),
    ("see http://a:b@h:8080/p?q=1 and s3://k:s3cr%2Ft@bucket/key", "see http://a:***@h:8080/p?q=1 "
                                                                  "and s3://k:***@bucket/key"),
    ("postgresql+psycopg2://:pw@db/x", "postgresql+psycopg2://:***@db/x"),
    ("https://user@host/x https://host:443/x", "https://user@host/x https://host:443/x"),
    ("time 12:30@noon, not a URL", "time 12:30@noon, not a URL"),
])
def test_url_credentials_are_masked_and_nothing_else(text, want):
    assert redact_text(text, secrets=[]) == want


def test_secret_environment_values_are_masked_wherever_they_appear(monkeypatch):
    monkeypatch.setattr(redact.os, "environ", ENV)
    secrets = redact.env_secrets()
    assert set(secrets) == {"sk-test-123456", "hf_abcdef", "pw-9876", "aws/secret+key"}
    text = "key=sk-test-123456 tok hf_abcdef pw-9876 /usr/bin aws/secret+key 1"
    assert redact_text(text) == f"key={MASK} tok {MASK} {MASK} /usr/bin {MASK} 1"


def test_recipe_values_under_secret_names_are_masked_and_the_rest_kept():
    recipe = {"model": {"type": "vit", "class_token": True, "depth": 2},
              "task": {"input_key": "video", "target_key": "label"},
              "hooks": [{"type": "mine", "api_key": "abc", "Auth_Token": "t", "db_password": "p",
                         "client_secret": "s", "num_keys": 3, "uri": "https://u:pw@h/x"}]}
    out = redact_config(recipe, secrets=[])
    assert out["model"] == recipe["model"] and out["task"] == recipe["task"]
    assert out["hooks"][0] == {"type": "mine", "api_key": MASK, "Auth_Token": MASK,
                               "db_password": MASK, "client_secret": MASK, "num_keys": 3,
                               "uri": "https://u:***@h/x"}
    assert recipe["hooks"][0]["api_key"] == "abc"  # the in-memory recipe keeps the real value


def test_command_line_overrides_of_secret_keys_lose_their_value():
    argv = ["tubelet", "train", "r.yaml", "hooks.0.api_key=abc", "x.uri=https://u:pw@h",
            "optimizer.lr=1e-3"]
    assert redact_argv(argv, secrets=[]) == ["tubelet", "train", "r.yaml", f"hooks.0.api_key={MASK}",
                                             "x.uri=https://u:***@h", "optimizer.lr=1e-3"]


def test_every_registered_parameter_with_a_secret_word_is_a_deliberate_exemption():
    """A new part whose parameter is named like a secret (`token`, `*_key`) must be listed in
    NOT_SECRET (it holds none) or have its value masked in every written recipe."""
    from tubelet import build, validate_schema
    schema = validate_schema.cached_schema() or build.schema()  # the same data, saved by a run
    names = {name for kind in schema["registries"].values() for spec in kind.values()
             for name in spec["params"]}
    names |= {name for spec in schema["sections"].values() for name in spec["params"]}
    flagged = {n for n in names if redact.SECRET_NAME.search(n)}
    assert flagged <= redact.NOT_SECRET, flagged - redact.NOT_SECRET
    assert "input_key" in flagged  # the check sees the task parameters


def test_the_log_formatter_masks_messages_and_tracebacks(monkeypatch):
    monkeypatch.setattr(redact.os, "environ", ENV)
    fmt = redact.RedactingFormatter("%(message)s")
    try:
        raise ValueError("cannot open https://u:hunter2@h/x with sk-test-123456")
    except ValueError:
        record = logging.LogRecord("tubelet", logging.ERROR, __file__, 1, "failed %s", ("hf_abcdef",),
                                   exc_info=__import__("sys").exc_info())
    text = fmt.format(record)
    assert "hunter2" not in text and "sk-test-123456" not in text and "hf_abcdef" not in text
    assert "https://u:***@h/x" in text and "Traceback" in text


# ---------------------------------------------------------------------------- env.json
def test_git_state_reads_commit_and_dirty_flag_and_is_null_outside_a_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert envinfo.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "new.py").write_text("")  # an untracked file counts
    assert envinfo.git_state(repo) == {"commit": head, "dirty": True}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert envinfo.git_state(plain) is None


def test_without_git_the_commit_is_null(tmp_path, monkeypatch):
    subprocess.run(["git", "-C", str(tmp_path), "init", "-q"], check=True)
    assert envinfo.git_state(tmp_path) is None  # a repository without commits
    assert shutil.which("git")  # git is here: the null below comes from its absence
    monkeypatch.setattr(envinfo.shutil, "which", lambda name: None)
    assert envinfo.git_state(envinfo.Path(envinfo.__file__).parent) is None


def test_the_environment_record_has_every_field_and_redacts_the_launcher(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("MASTER_ADDR", "https://u:pw@node1")
    env = envinfo.collect_env(world_size=1, argv=["/bin/tubelet", "train", "r.yaml",
                                                  "x.api_token=zzz"])
    assert env["command"] == ["tubelet", "train", "r.yaml", f"x.api_token={MASK}"]
    assert env["launcher"]["SLURM_JOB_ID"] == "4242"
    assert env["launcher"]["MASTER_ADDR"] == "https://u:***@node1"
    for key in ("tubelet", "cwd", "python", "hostname", "torch", "cuda", "cudnn", "nccl", "gpus",
                "world_size"):
        assert key in env
    assert env["tubelet"]["git"] is None or len(env["tubelet"]["git"]["commit"]) == 40


def test_a_user_error_line_on_stderr_is_redacted(capsys):
    from conftest import DEBUG_RECIPE
    from tubelet import cli
    assert cli.main(["config", str(DEBUG_RECIPE), "model.pretrained=https://u:hunter2@h/w.pt"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "https://u:***@h/w.pt" in err, err
