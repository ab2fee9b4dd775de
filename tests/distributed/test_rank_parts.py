"""The per-rank parts in one process, fast: which modules FSDP2 shards, what a resume does to
each rank's random stream, and the bad-file limit over all ranks' lists."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tubelet.data.batches import BadData, BadDataError
from tubelet.engine.checkpoint import rng_state
from tubelet.engine.parallel import describe_units, fsdp_units
from tubelet.engine.streams import restore_rank_stream, seed_all, seed_rank_stream
from tubelet.models.classifier import VideoClassifier
from tubelet.models.mae import MaskedAutoencoder
from tubelet.models.resnet3d import ResNet3D
from tubelet.models.vit import VisionTransformer

VIT = dict(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=16, depth=3,
           num_heads=2)


class PluginTrunk(nn.Module):
    """A plugin model with no `fsdp_units()` of its own that holds one of ours."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = VisionTransformer(**VIT, num_classes=0)
        self.head = nn.Linear(16, 3)


@pytest.mark.parametrize("make, expected", [
    (lambda: VisionTransformer(**VIT, num_classes=4), "blocks.0-2"),
    (lambda: MaskedAutoencoder(**VIT, decoder_embed_dim=8, decoder_depth=2,
                               decoder_num_heads=2), "encoder.blocks.0-2, decoder.blocks.0-1"),
    (lambda: VideoClassifier(backbone={"type": "vit", **VIT, "num_classes": 0},
                             head={"type": "linear", "num_classes": 4}), "backbone.blocks.0-2"),
    (lambda: VideoClassifier(backbone={"type": "resnet3d_18", "num_classes": 0, "base_width": 8},
                             head={"type": "linear", "num_classes": 4}), "backbone.stages.0-3"),
    (lambda: ResNet3D(block="basic", layers=(1, 1, 1, 1), base_width=8), "stages.0-3"),
    (PluginTrunk, "trunk.blocks.0-2"),
])
def test_fsdp_units_are_found_wherever_the_blocks_live(make, expected):
    model = make()
    units = fsdp_units(model)
    assert describe_units(model, units) == expected
    assert len({id(u) for u in units}) == len(units)  # each once


def test_a_model_without_units_has_none():
    assert fsdp_units(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == []


def draws() -> torch.Tensor:
    return torch.rand(4)


def saved_streams(seed: int, world: int) -> list[dict]:
    """What `world` ranks would save after building a model from `seed` and one draw each."""
    states = []
    for rank in range(world):
        seed_all(seed)
        torch.rand(100)  # the shared model init
        seed_rank_stream(seed, rank=rank)
        draws()
        states.append(rng_state())
    return states


def test_rank_streams_differ_and_rank0_keeps_the_seed_stream():
    seed_all(7)
    torch.rand(100)
    single = draws()  # one process: seed 7's stream after the init, as before per-rank streams
    states = saved_streams(7, 2)
    seed_all(7)
    torch.rand(100)
    seed_rank_stream(7, rank=0)
    assert torch.equal(draws(), single)
    seed_all(7)
    torch.rand(100)
    seed_rank_stream(7, rank=1)
    assert not torch.equal(draws(), single)
    assert not torch.equal(states[0]["torch"], states[1]["torch"])


@pytest.mark.parametrize("old_world, new_world", [(2, 2), (2, 1), (1, 2), (2, 3), (4, 2)])
def test_resume_streams_at_any_world_size(old_world, new_world):
    states = saved_streams(3, old_world)
    after = {}
    for rank in range(new_world):
        how = restore_rank_stream(states, rank=rank, world_size=new_world, step=5)
        after[rank] = draws()
        if rank < old_world:  # its own saved stream, continued exactly
            torch.set_rng_state(states[rank]["torch"])
            assert torch.equal(after[rank], draws())
            assert how == ("own" if old_world == new_world else "kept")
        else:
            assert how == "derived"
            restore_rank_stream(states, rank=rank, world_size=new_world, step=5)
            assert torch.equal(after[rank], draws())  # deterministic
    values = list(after.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])


def test_a_checkpoint_with_one_shared_stream_gets_distinct_streams():
    """Written before streams were per rank: every rank saved the same state."""
    shared = saved_streams(3, 1) * 2
    restore_rank_stream(shared, rank=0, world_size=2, step=4)
    a = draws()
    assert restore_rank_stream(shared, rank=1, world_size=2, step=4) == "derived"
    assert not torch.equal(a, draws())


def test_bad_data_limit_counts_the_union_of_all_ranks():
    bad = BadData(split="train", num_files=10, max_fraction=0.2, run_dir=None)
    bad.deferred = True
    bad.add([("a.mp4", "a: cannot open"), ("b.mp4", "b: cannot open"), ("c.mp4", "c: bad")])
    assert bad.changed  # deferred: no raise until the agreement
    with pytest.raises(BadDataError, match="3 of 10 train files"):
        bad.agree()
    assert not bad.changed


class Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return {"video": torch.full((3,), float(i)), "label": i % 2}


def test_eval_polls_before_every_batch_and_once_after_and_abandons_on_stop():
    from torch.utils.data import DataLoader

    from tubelet.engine.evaluate import EvalAbandoned, run_eval
    from tubelet.tasks.classification import ClassificationTask
    model, loader = nn.Linear(3, 2), DataLoader(Items(), batch_size=3)  # 4 batches
    calls = []
    metrics = run_eval(model, ClassificationTask(2), loader, device=torch.device("cpu"),
                       should_stop=lambda: calls.append(1) and False)
    assert len(calls) == 4 + 1 and "val/acc1" in metrics
    calls.clear()
    with pytest.raises(EvalAbandoned):
        run_eval(model, ClassificationTask(2), loader, device=torch.device("cpu"),
                 should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert len(calls) == 3 and model.training  # the mode is restored
    assert "val/acc1" in run_eval(model, ClassificationTask(2), loader,  # `tubelet eval`: no polls
                                  device=torch.device("cpu"))
