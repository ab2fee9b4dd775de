"""Checkpoint files: atomic, checksummed, keep-last, the resume fallback, the real reason."""
import logging
import os
import random

import numpy as np
import pytest
import torch

from tubelet.engine.checkpoint import (CheckpointError, find_resumable, list_checkpoints,
                                       load_checkpoint, model_mismatch, rng_state,
                                       save_checkpoint, set_rng_state)
from tubelet.registry import ConfigError


def state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}, "trainer": {"step": int(v)}}


def names(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def test_keep_last_links_digests_and_no_temp_files(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=2, is_best=step == 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000003.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["trainer"]["step"] == 4
    # best survives the deletion of its step file: it is its own link to the data
    assert load_checkpoint(tmp_path / "best.pt")["trainer"]["step"] == 2
    # every file has its digest (sha256sum format), deleted files took theirs along
    assert names(tmp_path) == sorted(["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256",
                                      "step_00000003.pt", "step_00000003.pt.sha256",
                                      "step_00000004.pt", "step_00000004.pt.sha256"])
    import hashlib
    digest, name = (tmp_path / "step_00000004.pt.sha256").read_text().split()
    assert name == "step_00000004.pt"
    assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_a_later_step_file_never_makes_the_new_one_deleted(tmp_path):
    """A step file from an abandoned branch (higher step) must not count against keep_last."""
    save_checkpoint(state(50), tmp_path, step=50, keep_last=1)
    for step in (1, 2, 3):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=1)
    assert {p.name for p in list_checkpoints(tmp_path)} == {"step_00000050.pt", "step_00000003.pt"}


def flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.unlink()  # a new inode: the other names (last.pt) keep the good bytes
    path.write_bytes(bytes(data))


def test_flipped_bits_in_a_tensor_and_in_data_pkl_are_detected(tmp_path):
    save_checkpoint({"model": {"w": torch.arange(1000, dtype=torch.float32)},
                     "optimizer": {"lr_key": 1.0}}, tmp_path, step=1)
    path = tmp_path / "step_00000001.pt"
    raw = path.read_bytes()
    tensor_at = raw.index(torch.arange(1000, dtype=torch.float32).numpy().tobytes()[400:440])
    pkl_at = raw.index(b"lr_key")
    for offset in (tensor_at, pkl_at):
        path.unlink()
        path.write_bytes(raw)
        flip_bit(path, offset)
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(path)
        # without the digest, torch would load both silently: that is what the digest is for
        loaded = torch.load(path, weights_only=True)
        assert "w" in loaded.get("model", {}) or "lr_kez" in str(loaded)


def test_fallback_skips_torn_checksum_and_foreign_files_and_moves_them_aside(tmp_path, caplog):
    for step in (10, 20, 30, 40):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=4)
    torn, flipped, foreign = (tmp_path / f"step_000000{s}.pt" for s in (40, 30, 20))
    os.truncate(torn, torn.stat().st_size // 2)  # in place: last.pt (the same file) too
    flip_bit(flipped, 200)
    os.unlink(foreign)
    torch.save({"model": {"v": torch.zeros(2)}, "trainer": {"step": 20}}, foreign)  # no digest
    (tmp_path / "step_00000020.pt.sha256").unlink()

    def check(s):
        return model_mismatch(s["model"], {"w": torch.Size([3])})

    with caplog.at_level(logging.WARNING, logger="tubelet"):
        path, loaded = find_resumable(tmp_path, check=check)
    assert path.name == "step_00000010.pt" and loaded["trainer"]["step"] == 10
    assert "step_00000040.pt does not load (checksum mismatch" in caplog.text
    assert "step_00000030.pt does not load (checksum mismatch" in caplog.text
    assert "step_00000020.pt does not load (another model: 1 missing key(s) (w)" in caplog.text
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010.pt"]
    assert {"step_00000040.pt", "step_00000030.pt", "step_00000020.pt"} <= set(
        names(tmp_path / "corrupt"))
    assert not (tmp_path / "last.pt").exists()  # it was step 40's data: aside with it
    # the next save continues from there, and keep_last counts only good files
    save_checkpoint(state(11), tmp_path, step=11, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000011.pt"]


def test_last_pt_is_the_fallback_when_every_step_file_is_torn(tmp_path):
    for step in (1, 2):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=2)
    for p in list_checkpoints(tmp_path):  # new inodes, as after an interrupted copy
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data[:len(data) // 3])
        (tmp_path / (p.name + ".sha256")).unlink()  # the copy lost the digests too
    path, loaded = find_resumable(tmp_path)
    assert path.name == "last.pt" and loaded["trainer"]["step"] == 2
    (tmp_path / "last.pt").unlink()
    with pytest.raises(ConfigError, match="step_00000002.pt: not a complete checkpoint"):
        find_resumable(tmp_path)


def test_none_loadable_is_an_error_listing_every_file_and_moves_nothing(tmp_path):
    for step in (1, 2):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=2)
    for p in [*list_checkpoints(tmp_path), tmp_path / "last.pt"]:
        p.write_bytes(b"")  # truncates the shared inode: last.pt too
    with pytest.raises(ConfigError) as e:
        find_resumable(tmp_path)
    msg = str(e.value)
    assert "none of the 2 checkpoints" in msg and "resume=restart" in msg
    assert "step_00000002.pt: checksum mismatch" in msg and "step_00000001.pt: checksum" in msg
    assert "\n" not in msg and not (tmp_path / "corrupt").exists()
    assert find_resumable(tmp_path / "nothing") is None  # no checkpoints: a fresh start


class NotAllowed:
    pass


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("content", ["empty", "truncated", "hostile", "class", "random", "list"])
def test_a_named_bad_checkpoint_is_one_line_with_the_real_reason(tmp_path, content):
    path = tmp_path / "x.pt"
    good = tmp_path / "good.pt"
    torch.save(state(1), good)
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[:300])
    elif content == "hostile":
        torch.save({"model": Evil()}, path)
    elif content == "class":
        torch.save({"obj": NotAllowed()}, path)
    elif content == "random":
        path.write_bytes(random.Random(0).randbytes(2000))
    else:
        torch.save([1, 2], path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, key="resume")
    msg = str(e.value)
    assert msg.startswith(f"resume: {path}: ") and "\n" not in msg
    assert "weights_only=False" not in msg and "weights_only" not in msg
    expected = {"empty": "empty or truncated", "truncated": "torn or truncated",
                "hostile": "unsupported GLOBAL posix.system", "class": "NotAllowed",
                "random": "not a", "list": "holds a list"}[content]
    assert expected in msg, msg


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint({"rng": rng_state()}, tmp_path, step=0)
    expected = (random.random(), np.random.randn(), torch.rand(2))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    got = (random.random(), np.random.randn(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
