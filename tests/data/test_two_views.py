"""two_views: the first view is the child dataset's own clip, the second its own draw, and a pair
decoded in one pass (overlapping clips) holds the very frames two separate decodes give."""
from __future__ import annotations

import pytest
import torch

from tubelet.data.datasets.synthetic import SyntheticActions
from tubelet.data.datasets.two_views import TwoViews
from tubelet.data.decode import decode_frames
from tubelet.data.seeding import sample_generator
from tubelet.data.transforms import Compose, RandomResizedCrop
from tubelet.registry import ConfigError


def child(root, **kw) -> dict:
    return {"type": "synthetic_actions", "root": str(root), "subset": "train", "num_classes": 4,
            "num_train_per_class": 6, "num_test_per_class": 3, "size": 24, "video_frames": 8,
            **kw}


def test_view_one_is_the_childs_clip_and_view_two_its_own_draw(tiny_data_root):
    crop = Compose([RandomResizedCrop(16, scale=(0.4, 1.0))])
    pairs = TwoViews(child(tiny_data_root, num_frames=4, stride=2), transform=crop)
    alone = SyntheticActions(str(tiny_data_root), num_frames=4, stride=2, size=24,
                             video_frames=8, num_classes=4, num_train_per_class=6,
                             num_test_per_class=3, transform=crop)
    differ = 0
    for key in [(0, 0), (5, 0), (5, 1), (23, 2)]:
        item, ref = pairs[key], alone[key]
        assert torch.equal(item["video"], ref["video"]) and item["label"] == ref["label"]
        assert item["video2"].shape == item["video"].shape
        differ += not torch.equal(item["video"], item["video2"])
        assert torch.equal(pairs[key]["video2"], item["video2"])  # deterministic per key
    assert differ == 4


def test_one_decode_of_overlapping_clips_equals_two_decodes(tiny_data_root):
    seen = set()
    for num_frames in (4, 2):  # spans of 7 frames (always overlap) and of 2 (often apart)
        pairs = TwoViews(child(tiny_data_root, num_frames=num_frames, stride=2 if num_frames == 4 else 1))
        d = pairs.dataset
        for index in range(12):
            gens = (sample_generator(0, 0, index), sample_generator(0, 1 << 30, index))
            first, second = (pairs._clip_indices(index, g) for g in (sample_generator(0, 0, index),
                                                                     sample_generator(0, 1 << 30, index)))
            seen.add(min(second) <= max(first) and min(first) <= max(second))
            one, two = pairs.load_pair(index, gens)
            path, info = d.samples.paths[index], d.infos[index]
            assert torch.equal(one, decode_frames(path, first, info=info).permute(3, 0, 1, 2))
            assert torch.equal(two, decode_frames(path, second, info=info).permute(3, 0, 1, 2))
    assert seen == {True, False}  # both branches ran


def test_two_views_refuses_multi_view_children_and_device_transforms(tiny_data_root):
    with pytest.raises(ConfigError, match="temporal_views"):
        TwoViews({**child(tiny_data_root), "subset": "test", "temporal_views": 2})
    with pytest.raises(ConfigError, match="device_transforms"):
        TwoViews(child(tiny_data_root), to_float=False)
