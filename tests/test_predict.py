"""`tubelet predict` and `tubelet export`: a checkpoint alone (its model card) predicts real
videos exactly as `tubelet eval` scores them, a bad file is one error row, long videos get
per-window rows, and the ONNX export matches PyTorch under onnxruntime.

One debug-recipe run, trained once for the module (a few steps: the oracle is equality with
eval, not accuracy), serves every end-to-end test."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from conftest import DEBUG_RECIPE, run_tubelet
from tubelet.config import load_config
from tubelet.data.synth import motion_classes, render_video, write_mp4

CLASSES = sorted(name for name, _ in motion_classes(4))  # HMDB51's order: the split files'


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data_root):
    """(run dir, resolved recipe) of the debug recipe trained for one epoch of 2 steps."""
    tmp = tmp_path_factory.mktemp("predict")
    overrides = [f"data.train.root={tiny_data_root}", f"run.dir={tmp / 'run'}",
                 "train.epochs=1", "data.batch_size=12"]  # 2 steps: equality is the oracle
    run_tubelet("train", str(DEBUG_RECIPE), *overrides, cwd=tmp, timeout=900)
    return tmp / "run", load_config(DEBUG_RECIPE, overrides)


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _val_set(cfg: dict, **overrides):
    """The recipe's own val dataset (the run validated the recipe already)."""
    from tubelet import build
    build._register_builtins(None)
    node = {**cfg["data"]["val"], **overrides}
    return build.build_dataset(node, key="data.val")[0]


def _predict(checkpoint, inputs, **kwargs) -> tuple[int, list[dict]]:
    from tubelet.predict import predict
    out = io.StringIO()
    code = predict(checkpoint, inputs, out=out, num_workers=0, **kwargs)
    return code, _rows(out.getvalue())


def test_checkpoint_carries_class_names_and_eval_preprocessing(trained):
    run_dir, cfg = trained
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    card = state["inference"]
    val = _val_set(cfg)
    assert card["classes"] == val.classes == CLASSES
    assert card["clip"] == {"num_frames": 4, "stride": 2, "sampling": "interval",
                            "target_fps": None, "temporal_views": 1, "spatial_crops": 1}
    assert card["transforms"] == cfg["data"]["val"]["transforms"]
    assert card["model"] == cfg["model"] and card["task"] == "classification"


@pytest.mark.slow
def test_predict_scores_are_evals_scores_and_accuracy_equals_eval(trained, tmp_path):
    """Per video, predict's mean softmax over 2 temporal views equals the one computed from
    the recipe's own val dataset with 2 views (spatial crops of these square clips would all
    be alike); at 1x1 views its top-1 accuracy on the labelled test list equals `tubelet
    eval`'s val/acc1 (the CLI's code, in-process)."""
    from tubelet import build
    run_dir, cfg = trained
    model = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    net = build.build_model(cfg, load_pretrained=False)
    net.load_state_dict(model)
    net.eval()
    val = _val_set(cfg)
    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"{s.path} {s.target}\n" for s in val.samples))
    ds = _val_set(cfg, temporal_views=2, spatial_crops=1)
    with torch.no_grad():
        logits = torch.stack([net(ds[k]["video"][None])[0] for k in range(len(ds))])
    expected = logits.softmax(-1).view(len(val.samples), 2, -1).mean(1)  # views in a row
    code, rows = _predict(run_dir, [listing], top_k=4, views="2x1", batch_size=5)
    assert code == 0 and len(rows) == len(val.samples)
    for row, want, sample in zip(rows, expected, val.samples):
        assert row["path"] == str(sample.path) and row["label_id"] == sample.target
        assert row["label"] == val.classes[sample.target]
        assert row["top_ids"] == want.topk(4).indices.tolist(), row
        assert row["top"] == [val.classes[k] for k in row["top_ids"]]
        assert np.allclose(row["scores"], want.topk(4).values.numpy(), atol=2e-6)
    code, rows = _predict(run_dir, [listing], top_k=1, views="1x1")
    accuracy = np.mean([row["top_ids"][0] == row["label_id"] for row in rows])
    metrics = build.evaluate_checkpoint({**cfg, "checkpoint": str(run_dir)})
    # acc1 is a float32 mean: equal to 1e-6, far below one video in 12 (0.083)
    assert accuracy == pytest.approx(metrics["val/acc1"], abs=1e-6), (accuracy, metrics)


@pytest.mark.slow
def test_cli_files_and_folders_with_a_truncated_file(trained, tmp_path, tiny_data_root):
    """A file and a folder (searched recursively), rows to --out; a truncated video in the
    folder is one error row and exit 4; the other rows are predictions with the class names."""
    run_dir, _ = trained
    videos = sorted((tiny_data_root / "videos").rglob("*.mp4"))
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    (folder / "good.mp4").write_bytes(videos[1].read_bytes())
    data = videos[2].read_bytes()
    (folder / "cut.mp4").write_bytes(data[:len(data) // 2])
    (folder / "notes.txt").write_text("not a video")  # skipped: not a video suffix
    out = tmp_path / "rows.jsonl"
    proc = run_tubelet("predict", str(run_dir), str(videos[0]), str(tmp_path / "in"),
                       "--top-k", "2", "--out", str(out), "--workers", "0", cwd=tmp_path,
                       check=False)
    assert proc.returncode == 4 and proc.stdout == "", proc.stderr
    rows = _rows(out.read_text())
    assert [r["path"] for r in rows] == [str(videos[0]), str(folder / "cut.mp4"),
                                         str(folder / "good.mp4")]
    assert set(rows[1]) == {"path", "error"} and rows[1]["error"]
    for row in (rows[0], rows[2]):
        assert len(row["top"]) == 2 and row["top"] == [CLASSES[k] for k in row["top_ids"]]
        assert row["scores"][0] >= row["scores"][1] > 0
    assert "1 row(s) are errors (exit 4)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_windows_of_a_long_video_and_their_mean(trained, tmp_path):
    """A 60 s video in windows of 10 s every 5 s: 11 window rows (the windows that fit), then
    their mean, whose scores are the mean of the window scores."""
    run_dir, _ = trained
    velocity = dict(motion_classes(4))["move_left_fast"]
    frames = render_video(np.random.default_rng(0), velocity=velocity, num_frames=480, size=24)
    write_mp4(tmp_path / "long.mp4", frames, fps=8)
    code, rows = _predict(run_dir, [tmp_path / "long.mp4"], top_k=4, window_s=10, stride_s=5)
    assert code == 0 and len(rows) == 12
    assert [r["window"] for r in rows[:-1]] == [[5.0 * k, 5.0 * k + 10] for k in range(11)]
    last = rows[-1]
    assert last["windows"] == 11 and "window" not in last
    by_class = np.zeros((11, 4))
    for k, row in enumerate(rows[:-1]):
        by_class[k, row["top_ids"]] = row["scores"]
    mean = by_class.mean(0)
    assert last["top_ids"] == np.argsort(-mean, kind="stable").tolist()
    assert np.allclose(last["scores"], mean[last["top_ids"]], atol=2e-6)


def test_a_checkpoint_without_a_card_predicts_class_indices_and_says_why(trained, tmp_path,
                                                                         capsys, tiny_data_root):
    """A checkpoint saved before cards existed (only its recipe) still predicts, with indices
    for names; a safetensors export carries the card, names included."""
    run_dir, _ = trained
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    del state["inference"]
    torch.save(state, tmp_path / "old.pt")
    video = sorted((tiny_data_root / "videos").rglob("*.mp4"))[0]
    code, old_rows = _predict(tmp_path / "old.pt", [video], top_k=4)
    assert code == 0 and old_rows[0]["top"] == [str(k) for k in old_rows[0]["top_ids"]]
    assert "class indices, not names: the checkpoint was saved before" in capsys.readouterr().err
    from tubelet.export import export
    export(run_dir, tmp_path / "w.safetensors")
    code, rows = _predict(tmp_path / "w.safetensors", [video], top_k=4)
    assert rows[0]["top_ids"] == old_rows[0]["top_ids"]
    assert rows[0]["scores"] == old_rows[0]["scores"]
    assert rows[0]["top"] == [CLASSES[k] for k in rows[0]["top_ids"]]


def test_onnx_export_matches_pytorch_under_onnxruntime(trained, tmp_path):
    """The classifier and the encoder alone, exported with a dynamic batch, give PyTorch's
    outputs on real decoded clips at batch 1 and 3 (max abs diff <= 1e-4)."""
    ort = pytest.importorskip("onnxruntime")  # the `onnx` extra (in `dev`, so CI runs this)
    import onnx

    from tubelet.export import Encoder, export
    from tubelet.trained import load_trained
    run_dir, cfg = trained
    val = _val_set(cfg)
    clips = torch.stack([val[k]["video"] for k in range(3)])  # (3, C, T, H, W), real frames
    model = load_trained(run_dir).model
    for encoder, reference in ((False, model), (True, Encoder(model).eval())):
        path = export(run_dir, tmp_path / f"m{int(encoder)}.onnx", encoder=encoder)
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(meta["tubelet"])["classes"] == val.classes
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in (clips[:1], clips):
            with torch.no_grad():
                want = reference(batch).numpy()
            got = session.run(None, {"video": batch.numpy()})[0]
            assert got.shape == want.shape == (len(batch), 4 if not encoder else 32)
            assert np.abs(got - want).max() <= 1e-4


def test_views_windows_and_inputs_are_checked(tmp_path):
    from tubelet.predict import collect_inputs, parse_views
    from tubelet.registry import ConfigError
    assert parse_views("5x3") == (5, 3) and parse_views("2×1") == (2, 1)
    for bad in ("5", "0x1", "ax3", "1x2x3"):
        with pytest.raises(ConfigError, match="--views"):
            parse_views(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no videos in this folder"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="nowhere.mp4: no such file or folder"):
        collect_inputs([tmp_path / "nowhere.mp4"])
    (tmp_path / "list.txt").write_text("a.mp4 1\nsub/b.mkv 0\n")
    videos, labels = collect_inputs([tmp_path / "list.txt"])
    assert videos == [tmp_path / "a.mp4", tmp_path / "sub" / "b.mkv"] and labels == [1, 0]
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,3,13,test\n")
    videos, labels = collect_inputs([tmp_path / "test.csv"], root=tmp_path / "clips")
    assert videos == [tmp_path / "clips" / "abc_000003_000013.mp4"] and labels == [None]
    (tmp_path / "test.json").write_text('[{"id": "17"}, {"id": "4"}]')
    videos, _ = collect_inputs([tmp_path / "test.json"])
    assert videos == [tmp_path / "17.webm", tmp_path / "4.webm"]
