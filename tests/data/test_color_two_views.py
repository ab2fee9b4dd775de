"""two_views' `transforms2`: the second view runs its own list (MoCo v3's asymmetric pair) with
the second view's generator, the first view is untouched, and a list that would make the two
views differ in size, or holds a bad node, is refused."""
from __future__ import annotations

import pytest
import torch

from tubelet.data.datasets.two_views import SECOND_VIEW, TwoViews
from tubelet.data.seeding import sample_generator
from tubelet.data.transforms import Compose, RandomResizedCrop
from tubelet.registry import TRANSFORMS, ConfigError, build


def child(root) -> dict:
    return {"type": "synthetic_actions", "root": str(root), "subset": "train", "num_classes": 4,
            "num_train_per_class": 6, "num_test_per_class": 3, "size": 24, "video_frames": 8,
            "num_frames": 4, "stride": 2}


CROP = {"type": "random_resized_crop", "size": 16, "scale": [0.4, 1.0]}
SECOND = [CROP, {"type": "color_jitter", "brightness": 0.4, "hue": 0.1, "p": 1.0},
          {"type": "random_solarize", "p": 1.0}]


def test_the_second_view_runs_transforms2_with_its_own_generator(tiny_data_root):
    first = Compose([RandomResizedCrop(16, scale=(0.4, 1.0))])
    pairs = TwoViews(child(tiny_data_root), transform=first, transforms2=SECOND)
    same = TwoViews(child(tiny_data_root), transform=first)
    second = Compose([build(t, TRANSFORMS) for t in SECOND])
    for index, epoch in [(0, 0), (7, 1), (20, 3)]:
        item = pairs[(index, epoch)]
        gens = (sample_generator(0, epoch, index), sample_generator(0, epoch + SECOND_VIEW, index))
        one, two = pairs.load_pair(index, gens)  # the clip draws, then the transforms' draws
        want1 = first(one, generator=gens[0]).float() / 255
        want2 = second(two, generator=gens[1]).float() / 255
        assert torch.equal(item["video"], want1) and torch.equal(item["video2"], want2)
        plain = same[(index, epoch)]
        assert torch.equal(plain["video"], item["video"])  # the first view is untouched
        assert not torch.equal(plain["video2"], item["video2"])  # the second is not `transforms`


def test_transforms2_must_give_the_first_views_size_and_valid_nodes(tiny_data_root):
    first = Compose([RandomResizedCrop(16)])
    with pytest.raises(ConfigError, match=r"^transforms2: makes \(12, 12\).*\(16, 16\)"):
        TwoViews(child(tiny_data_root), transform=first,
                 transforms2=[{"type": "random_resized_crop", "size": 12}])
    with pytest.raises(ConfigError, match=r"^transforms2: makes the clip size"):
        TwoViews(child(tiny_data_root), transform=first, transforms2=[])
    with pytest.raises(ConfigError, match=r"^transforms2\[1\]\.hue: must be >= 0"):
        TwoViews(child(tiny_data_root), transform=first,
                 transforms2=[CROP, {"type": "color_jitter", "hue": -0.1}])
    with pytest.raises(ConfigError, match=r"^transforms2\[0\]\.type: unknown transform"):
        TwoViews(child(tiny_data_root), transform=first, transforms2=[{"type": "colour"}])
    with pytest.raises(ConfigError, match=r"^transforms2: expected a list"):
        TwoViews(child(tiny_data_root), transform=first, transforms2={"type": "color_jitter"})
