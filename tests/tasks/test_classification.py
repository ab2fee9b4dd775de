import pytest
import torch
from torch import nn

from tubelet.data.mixup import Mixup, smooth_one_hot
from tubelet.metrics import MultiViewAccuracy
from tubelet.registry import ConfigError
from tubelet.tasks.classification import ClassificationTask


class Fixed(nn.Module):
    """Returns the logits stored in the batch's video tensor."""

    def forward(self, x):
        return x.flatten(1)


def test_label_smoothing_one_hot():
    y = smooth_one_hot(torch.tensor([0, 2]), 4, smoothing=0.1)
    torch.testing.assert_close(y[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))
    torch.testing.assert_close(y.sum(1), torch.ones(2))


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixup_and_cutmix_give_soft_targets_that_match_the_pixels(kind):
    mix = Mixup(num_classes=3, mixup_alpha=0.8 if kind == "mixup" else 0.0,
                cutmix_alpha=1.0 if kind == "cutmix" else 0.0, label_smoothing=0.0)
    x = torch.stack([torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8)])  # (B,C,T,H,W)
    torch.manual_seed(0)
    mixed, y = mix(x, torch.tensor([0, 1]))
    share_of_ones = mixed[0].mean().item()  # sample 0 was zeros, mixed with sample 1 (ones)
    torch.testing.assert_close(y[0], torch.tensor([1 - share_of_ones, share_of_ones, 0.0]))
    if kind == "cutmix":  # the same box in every frame
        assert torch.equal(mixed[0, :, 0], mixed[0, :, 1])
    torch.manual_seed(0)  # the global RNG drives it: a restored RNG mixes the same way
    assert torch.equal(mix(x, torch.tensor([0, 1]))[0], mixed)


def test_task_with_mixup_uses_soft_target_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 4))
    task = ClassificationTask(4, label_smoothing=0.1, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 0.0})
    batch = {"video": torch.randn(4, 3, 2, 4, 4), "label": torch.tensor([0, 1, 2, 3])}
    loss = task.loss(model, batch)
    assert loss.ndim == 0 and loss.item() > 0
    with pytest.raises(ConfigError, match="mixup.mixup_alhpa: unknown key"):
        ClassificationTask(4, mixup={"mixup_alhpa": 0.8})


def test_multi_view_averages_softmax_per_video():
    task = ClassificationTask(3)
    # video 7 (label 0): one confident wrong view, two mildly right views -> right on average
    logits = torch.tensor([[0.0, 5.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    batch = {"video": logits, "label": torch.tensor([0, 0, 0, 2]), "index": torch.tensor([7, 7, 7, 9])}
    task.eval_step(Fixed(), batch)
    metrics = task.compute_metrics()
    assert metrics == {"acc1": 1.0, "mean_class_acc": 1.0}  # two videos, both right
    video, label = task.accuracy.video_scores()
    torch.testing.assert_close(video[0], logits[:3].softmax(-1).mean(0))
    task.reset_metrics()
    task.eval_step(Fixed(), {**batch, "index": torch.arange(4)})  # each view alone: 3 of 4
    assert task.compute_metrics()["acc1"] == 0.75


def test_multi_view_split_across_ranks_counts_each_view_once():
    """Two ranks each see some views of the same videos; gathering their states (what torchmetrics'
    sync does with `cat`) gives exactly the single-process result."""
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 6), torch.randint(0, 6, (12,))
    ids = torch.arange(4).repeat(3)  # 4 videos x 3 views
    labels = labels[ids]  # a video has one label
    single = MultiViewAccuracy(6)
    single.update(logits, labels, ids)
    ranks = [MultiViewAccuracy(6), MultiViewAccuracy(6)]
    for r, m in enumerate(ranks):  # the eval sampler's rank r takes r, r+2, ...
        m.update(logits[r::2], labels[r::2], ids[r::2])
    merged = MultiViewAccuracy(6)
    for name in ("sums", "counts", "target", "video_id"):
        setattr(merged, name, [torch.cat([getattr(m, name)[0] for m in ranks])])
    merged._update_count = 2
    expected, got = single.compute(), merged.compute()
    assert got["num_videos"] == 4
    for k in expected:
        torch.testing.assert_close(got[k], expected[k])


def test_views_are_folded_per_video_so_memory_follows_videos_not_views():
    torch.manual_seed(0)
    num_videos, num_views = 10, 15
    ids = torch.arange(num_videos).repeat_interleave(num_views)  # a video's views in a row
    logits, labels = torch.randn(len(ids), 5), torch.randint(0, 5, (num_videos,))[ids]
    folded, unfolded = MultiViewAccuracy(5), MultiViewAccuracy(5)
    unfolded.FOLD_EVERY = 10**9
    for start in range(0, len(ids), 3):  # 50 batches of 3 views
        for m in (folded, unfolded):
            m.update(logits[start:start + 3], labels[start:start + 3], ids[start:start + 3])
    stored = sum(len(t) for t in folded.video_id)
    assert stored <= num_videos + 3 * folded.FOLD_EVERY < len(ids)  # not every view kept
    for k, v in unfolded.compute().items():
        torch.testing.assert_close(folded.compute()[k], v)
    video, _ = folded.video_scores()
    torch.testing.assert_close(video[4], logits[ids == 4].softmax(-1).mean(0))


def test_plain_labels_without_mixup_match_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batch = {"video": torch.randn(4, 3, 2, 2), "label": torch.tensor([0, 1, 2, 1])}
    loss = ClassificationTask(3, label_smoothing=0.1).loss(model, batch)
    expected = nn.functional.cross_entropy(model(batch["video"]), batch["label"], label_smoothing=0.1)
    assert torch.equal(loss, expected)
