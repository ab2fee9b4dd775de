"""Multi-label classification: mAP against scikit-learn (equal, not close), top-k recall, the
BCE loss, multi-view averaging, and the two annotation formats on the synthetic layout's MP4s."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from tubelet.data.datasets.multilabel import MultiLabelCSV, VideoListMultiLabel
from tubelet.data.synth_layouts import ensure_layout
from tubelet.multilabel_metrics import MultiLabelMetrics, per_class_ap, top_k_recall
from tubelet.registry import ConfigError
from tubelet.tasks.multilabel import MultiLabelTask


@pytest.mark.parametrize("seed", range(6))
def test_map_equals_scikit_learn_exactly(seed):
    rng = np.random.default_rng(seed)
    v, k = 50, 9
    scores = rng.random((v, k)).astype(np.float32)
    if seed % 2:  # ties: scikit-learn puts tied scores at one threshold, so must we
        scores = np.round(scores * 4) / 4
    targets = (rng.random((v, k)) < 0.3).astype(np.float32)
    targets[:, 0] = 0  # a class with no positive: excluded from the mean
    targets[:, 1] = 1  # and one where every video is positive
    ap = per_class_ap(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    assert np.isnan(ap[0])
    for c in range(1, k):
        assert ap[c] == average_precision_score(targets[:, c], scores[:, c]), c
    metric = MultiLabelMetrics(k)
    logits = torch.logit(torch.from_numpy(scores).double().clamp(1e-6, 1 - 1e-6)).float()
    metric.update(logits, torch.from_numpy(targets))
    out = metric.compute()
    s, t = torch.sigmoid(logits).numpy(), targets
    assert float(out["map"]) == average_precision_score(t[:, 1:], s[:, 1:], average="macro")
    assert float(out["map_classes"]) == k - 1


def test_top_k_recall_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.3, 0.2]])
    targets = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)
    # video 0: top-1 {0} finds 1 of 2; video 1: top-1 {3} finds 1 of 1; video 2 has no positive
    assert float(top_k_recall(scores, targets, 1)) == pytest.approx((0.5 + 1.0) / 2)
    assert float(top_k_recall(scores, targets, 2)) == pytest.approx((0.5 + 1.0) / 2)
    assert float(top_k_recall(scores, targets, 3)) == pytest.approx((1.0 + 1.0) / 2)


def test_views_of_a_video_are_averaged_as_sigmoid_scores():
    metric = MultiLabelMetrics(3, top_k=(1,))
    logits = torch.tensor([[4.0, -4.0, 0.0], [-4.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    metric.update(logits, targets, torch.tensor([7, 7, 8]))
    scores, per_video = metric.video_means()
    assert torch.allclose(scores[0], (logits[0].sigmoid() + logits[1].sigmoid()) / 2)
    assert torch.equal(per_video, targets[[0, 2]])


def test_bce_with_label_smoothing_and_wrong_targets():
    task = MultiLabelTask(3, label_smoothing=0.2)
    model = torch.nn.Identity()
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    want = F.binary_cross_entropy_with_logits(logits, target * 0.8 + 0.1)
    assert torch.allclose(task.loss(model, {"video": logits, "label": target}), want)
    with pytest.raises(ConfigError, match="multi-hot"):
        task.loss(model, {"video": logits, "label": torch.tensor([1])})


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return ensure_layout(tmp_path_factory.mktemp("ml") / "set", layout="multilabel",
                         num_classes=4, num_train_per_class=1, num_test_per_class=1,
                         num_frames=8, size=16)


def test_the_list_and_the_csv_give_the_same_two_labels_per_video(layout):
    listed = VideoListMultiLabel(str(layout / "train.txt"), num_classes=4, num_frames=4)
    csv = MultiLabelCSV(str(layout / "train.csv"), num_classes=4, classes=str(layout / "classes.txt"),
                        num_frames=4)
    assert len(listed) == len(csv) == 4
    for i in range(4):
        a, b = listed[(i, 0)], csv[(i, 0)]
        assert a["label"].sum() == 2 and a["label"][i % 4] == 1  # video n shows class n mod K
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["video"], b["video"])


def test_bad_annotations_name_the_line(layout, tmp_path):
    for text, match in (("videos/train_0000.mp4 1,9\n", r"train.txt:1: label 9 out of range"),
                        ("videos/train_0000.mp4 1,x\n", "integer class ids"),
                        ("videos/train_0000.mp4\n", r":1: expected")):
        (tmp_path / "train.txt").write_text(text)
        with pytest.raises(ConfigError, match=match):
            VideoListMultiLabel(str(tmp_path / "train.txt"), root=str(layout), num_classes=4)
    (tmp_path / "a.csv").write_text("path,labels\nvideos/train_0000.mp4,move_rigth\n")
    with pytest.raises(ConfigError, match=r"a.csv:2: unknown class 'move_rigth'; did you mean"):
        MultiLabelCSV(str(tmp_path / "a.csv"), root=str(layout), num_classes=4,
                      classes=str(layout / "classes.txt"))
    (tmp_path / "b.csv").write_text("file,labels\nx.mp4,1\n")
    with pytest.raises(ConfigError, match=r"b.csv:1: no column 'path'"):
        MultiLabelCSV(str(tmp_path / "b.csv"), num_classes=4)
