"""Contrastive losses, the momentum encoder and queue, and what `model.pretrained` takes from a
contrastive checkpoint: small seeded tensors against hand-written references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tubelet.models.classifier import VideoClassifier
from tubelet.models.contrastive import ContrastiveModel
from tubelet.models.weights import load_pretrained
from tubelet.registry import ConfigError
from tubelet.tasks.contrastive import (MoCoTask, SimCLRTask, cosine_momentum, moco_infonce,
                                       nt_xent)

VIT = {"type": "vit", "img_size": 16, "patch_size": 8, "num_frames": 4, "tubelet_size": 2,
       "embed_dim": 16, "depth": 1, "num_heads": 2, "class_token": False, "global_pool": "avg",
       "fc_norm": False, "num_classes": 0}


def model(**kw) -> ContrastiveModel:
    torch.manual_seed(0)
    args = dict(backbone=VIT, proj_layers=2, proj_hidden_dim=8, proj_dim=8, norm="ln")
    return ContrastiveModel(**{**args, **kw})


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's NT-Xent written out anchor by anchor over the 2N embeddings."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = torch.stack([z[i] @ z[j] / t for j in range(2 * n) if j != i])
        others = [j for j in range(2 * n) if j != i]
        total = total - (z[i] @ z[pos] / t - torch.logsumexp(sims, 0))
        assert pos in others
    return total / (2 * n)


def test_nt_xent_equals_the_anchor_by_anchor_definition():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for t in (0.1, 0.5):
        assert torch.allclose(nt_xent(z1, z2, temperature=t).double(),
                              reference_nt_xent(z1, z2, t), rtol=1e-5)


def test_moco_infonce_is_moco_v3s_loss_with_queue_negatives():
    g = torch.Generator().manual_seed(2)
    q, k, queue = (torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g),
                   F.normalize(torch.randn(10, 6, generator=g), dim=1))
    t = 0.2
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    # MoCo v3 builder.contrastive_loss: CE(q k^T / T, arange) * 2T; MoCo v2 appends the queue
    want = F.cross_entropy(qn @ kn.T / t, torch.arange(4)) * 2 * t
    assert torch.allclose(moco_infonce(q, k, temperature=t), want)
    want_q = F.cross_entropy(torch.cat([qn @ kn.T, qn @ queue.T], 1) / t, torch.arange(4)) * 2 * t
    assert torch.allclose(moco_infonce(q, k, temperature=t, queue=queue), want_q)


def test_cosine_momentum_by_step_as_moco_v3():
    # adjust_moco_momentum: 1 - 0.5 (1 + cos(pi k / K)) (1 - m0)
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, 0.9) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi / 4)) * 0.1)


def test_momentum_update_moves_parameters_only_and_moco_task_uses_the_schedule():
    m = model(momentum_encoder=True)
    online = dict(m.backbone.named_parameters())
    before = {k: v.clone() for k, v in m.momentum["backbone"].named_parameters()}
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    MoCoTask(momentum=0.9).after_step(m, step=0, total_steps=10)  # m = 0.9 at step 0
    for k, p in m.momentum["backbone"].named_parameters():
        assert torch.allclose(p, before[k] * 0.9 + online[k] * (1 - 0.9), rtol=0, atol=1e-6), k
        assert not p.requires_grad
    assert all(p.requires_grad for p in m.backbone.parameters())


def test_queue_is_a_ring_that_wraps():
    m = model(momentum_encoder=True, queue_size=5)
    keys = torch.arange(3 * 8, dtype=torch.float32).view(3, 8)
    m.enqueue(keys)
    m.enqueue(keys + 100)
    assert int(m.queue_ptr) == 1
    want = torch.stack([keys[2] + 100, keys[1], keys[2], keys[0] + 100, keys[1] + 100])
    assert torch.equal(m.queue, want)


def test_moco_loss_enqueues_both_views_keys_and_simclr_refuses_one_view_batches():
    m = model(momentum_encoder=True, queue_size=16, pred_layers=2, pred_hidden_dim=8)
    g = torch.Generator().manual_seed(3)
    batch = {"video": torch.randn(2, 3, 4, 16, 16, generator=g),
             "video2": torch.randn(2, 3, 4, 16, 16, generator=g)}
    loss = MoCoTask().loss(m, batch)
    loss.backward()
    assert int(m.queue_ptr) == 4 and torch.isfinite(loss)
    assert all(p.grad is None for p in m.momentum.parameters())
    assert m.predictor[0].weight.grad is not None
    with pytest.raises(ConfigError, match="two_views"):
        SimCLRTask().loss(m, {"video": batch["video"]})
    with pytest.raises(ConfigError, match="momentum"):
        MoCoTask().loss(model(), batch)


def test_queue_needs_the_momentum_encoder():
    with pytest.raises(ConfigError, match="queue_size"):
        model(queue_size=8)


def test_pretrained_loads_the_online_backbone_not_the_momentum_copy(tmp_path):
    m = model(momentum_encoder=True, queue_size=8, pred_layers=2, pred_hidden_dim=8)
    with torch.no_grad():
        for p in m.momentum.parameters():
            p.add_(5.0)  # the momentum copy now differs from the online encoder everywhere
    torch.save({"model": m.state_dict()}, tmp_path / "ckpt.pt")
    probe = VideoClassifier(backbone=VIT, head={"type": "linear_probe", "num_classes": 3},
                            freeze_backbone=True)
    report = load_pretrained(probe, tmp_path / "ckpt.pt")
    assert report.clean, report
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(probe.backbone.state_dict()[k], v), k
    skipped = " ".join(report.skipped)
    assert "momentum.backbone" in skipped and "projector" in skipped and "queue" in skipped


@pytest.mark.parametrize("override, message", [
    ({"model": {"queue_sise": 8}}, "model.queue_sise: unknown key; did you mean 'queue_size'?"),
    ({"model": {"norm": "bn2"}}, "model.norm: "),
    ({"task": {"temperature": 0}}, "task.temperature: must be > 0"),
    ({"task": {"momentum_schedule": "cosin"}}, "did you mean 'cosine'"),
    ({"data": {"train": {"dataset": {"num_frams": 4}}}}, "data.train.dataset.num_frams: unknown key"),
    ({"task": {"reversed_negatives": 1}}, "task.reversed_negatives: expected bool"),
    ({"task": {"reversed_negatives": True}, "data": {"train": {"dataset": {"num_frames": 1}}},
      "model": {"backbone": {"num_frames": 1, "tubelet_size": 1}}},
     "task.reversed_negatives: needs video clips of 2 or more frames; data.train gives "
     "batches of shape (2, 3, 1, 16, 16)"),
])
def test_contrastive_recipe_keys_are_validated(override, message):
    from tubelet.build import validate_config
    from tubelet.config import load_config
    from conftest import REPO

    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and k in a else v
                        for k, v in b.items()}}
    cfg = merge(load_config(REPO / "configs" / "debug" / "moco_tiny.yaml"), override)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, check_paths=False)
    assert message in str(err.value)


class TimeBlind(torch.nn.Module):
    """An encoder that sees no frame order: the mean over time, then a linear map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, T, H, W) -> (N, 6)
        return self.proj(x.mean(dim=2).flatten(1))


def clips(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(n, 3, 4, 4, 4, generator=g),
            "video2": torch.randn(n, 3, 4, 4, 4, generator=g)}


def test_reversed_negatives_add_each_clip_played_backwards_as_another_video():
    batch = clips(3, seed=4)
    v1, v2 = SimCLRTask(reversed_negatives=True).views(batch)
    assert v1.shape == (6, 3, 4, 4, 4) and torch.equal(v1[:3], batch["video"])
    for t in range(4):  # frame t of the reversed clip is frame T-1-t of the clip
        assert torch.equal(v1[3:, :, t], batch["video"][:, :, 3 - t])
        assert torch.equal(v2[3:, :, t], batch["video2"][:, :, 3 - t])
    enc = TimeBlind()
    want = reference_nt_xent(enc(v1), enc(v2), 0.2)  # 6 videos, anchor by anchor
    got = SimCLRTask(temperature=0.2, reversed_negatives=True).loss(enc, batch)
    assert torch.allclose(got.double(), want, rtol=1e-5)
    for shape in ((2, 3, 4, 4), (2, 3, 1, 4, 4)):  # images; one frame reads the same backwards
        with pytest.raises(ConfigError, match="reversed_negatives: needs video clips"):
            SimCLRTask(reversed_negatives=True).loss(enc, {"video": torch.randn(shape),
                                                           "video2": torch.randn(shape)})


class TimeBlindMoCo(TimeBlind):
    """The same encoder as its own momentum copy, no predictor, no queue."""
    momentum, queue = "itself", None

    def momentum_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).detach()


@pytest.mark.parametrize("kind", ["simclr", "moco"])
def test_with_reversed_negatives_an_encoder_blind_to_frame_order_cannot_beat_ln2(kind):
    """Each anchor's reversed positive scores exactly as its positive for a time-blind
    encoder, so each anchor's cross-entropy is at least ln 2 whatever its weights; without
    the reversals the same encoder gets well below that. What makes the encoder keep motion."""
    batch = clips(4, seed=5)
    batch["video2"] = batch["video"] + 0.01 * batch["video2"]  # near-identical views
    t = 0.1
    if kind == "simclr":
        enc, plain, rev = TimeBlind(), SimCLRTask(temperature=t), \
            SimCLRTask(temperature=t, reversed_negatives=True)
        bound = math.log(2)
    else:  # MoCo's loss: two cross-entropies, each times 2T
        enc, plain, rev = TimeBlindMoCo(), MoCoTask(temperature=t), \
            MoCoTask(temperature=t, reversed_negatives=True)
        bound = 2 * 2 * t * math.log(2)
    with torch.no_grad():
        assert float(plain.loss(enc, batch)) < 0.5 * bound
        assert float(rev.loss(enc, batch)) >= bound - 1e-6


def test_reversed_negatives_do_not_depend_on_where_the_reversals_sit():
    """Two ranks gather [clips_0, reversed_0, clips_1, reversed_1]; one process with the
    whole batch has [clips_0, clips_1, reversed_0, reversed_1]. NT-Xent is a mean over
    anchors, each against all the others, so both orders give one loss."""
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    order = torch.tensor([0, 1, 4, 5, 2, 3, 6, 7])
    assert torch.allclose(nt_xent(z1, z2, temperature=0.2),
                          nt_xent(z1[order], z2[order], temperature=0.2), rtol=1e-6)


def test_moco_queues_the_reversed_clips_keys_too():
    m = model(momentum_encoder=True, queue_size=16, pred_layers=2, pred_hidden_dim=8)
    batch = {k: v.expand(-1, -1, -1, 4, 4).repeat(1, 1, 1, 4, 4)
             for k, v in clips(2, seed=7).items()}  # (2, 3, 4, 16, 16)
    MoCoTask(reversed_negatives=True).loss(m, batch)
    assert int(m.queue_ptr) == 8  # 2 views x (2 clips + 2 reversed)
    with torch.no_grad():
        rev = m.momentum_forward(batch["video"].flip(2))
    assert torch.allclose(m.queue[2:4], F.normalize(rev, dim=1), atol=1e-6)
