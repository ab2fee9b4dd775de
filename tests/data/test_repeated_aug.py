"""Repeated augmentation (`data.train.num_sample`, data/repeated_aug.py): K clips of one decode
in one batch, the batch counting videos as VideoMAE's does, each view a function of
(seed, epoch, index, view) alone."""
from __future__ import annotations

import torch

from tubelet.build import build_dataset
from tubelet.data.loader import ResumableSampler, build_loader
from tubelet.data.repeated_aug import RepeatedCollate, set_num_sample

NODE = {"type": "synthetic_actions", "subset": "train", "num_classes": 2,
        "num_train_per_class": 3, "num_test_per_class": 2, "video_frames": 12, "size": 24,
        "fps": 8, "num_frames": 4, "stride": 2,
        "transforms": [{"type": "random_crop", "size": 16}, {"type": "random_horizontal_flip"}]}


def counted(root, num_sample: int):
    """The dataset with `num_sample` views and a counter of its real decodes."""
    dataset, _ = build_dataset({**NODE, "root": str(root)}, key="data.train")
    per_view = set_num_sample(dataset, num_sample, key="data.train") if num_sample > 1 else None
    calls = []
    load = dataset.load

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        return load(*args, **kwargs)
    dataset.load = counting_load
    return dataset, per_view, calls


def train_one_epoch_of_batches(dataset, per_view, num_sample: int, batch_size: int):
    sampler = ResumableSampler(len(dataset), batch_size=batch_size, seed=0)
    collate = RepeatedCollate(num_sample, per_view) if per_view else None
    return list(build_loader(dataset, sampler=sampler, collate_fn=collate))


def test_k2_halves_the_decodes_per_trained_clip(synth_root):
    clips, decodes = {}, {}
    for k in (1, 2):
        dataset, per_view, calls = counted(synth_root, k)
        batches = train_one_epoch_of_batches(dataset, per_view, k, batch_size=3)
        clips[k] = sum(b["video"].shape[0] for b in batches)
        decodes[k] = len(calls)
        for b in batches:  # batch_size counts videos; the model sees batch_size x K clips
            assert b["video"].shape == (3 * k, 3, 4, 16, 16)
            assert b["label"].shape == b["index"].shape == (3 * k,)
            assert len(b["bad"]) == 3  # one bad-file entry per decode, never per view
    assert decodes == {1: 6, 2: 6} and clips == {1: 6, 2: 12}
    assert decodes[2] / clips[2] == 0.5 * decodes[1] / clips[1]


def test_views_share_the_decode_differ_in_augmentation_and_are_deterministic(synth_root):
    plain, _, _ = counted(synth_root, 1)
    dataset, per_view, calls = counted(synth_root, 2)
    differ = 0
    for index in range(len(dataset)):
        item = dataset[(index, 3)]
        assert item["video"].shape == (2, 3, 4, 16, 16)
        assert torch.equal(item["label"], torch.tensor([plain[(index, 3)]["label"]] * 2))
        # view 0 is exactly the sample of num_sample 1; view 1 its own draw
        assert torch.equal(item["video"][0], plain[(index, 3)]["video"])
        differ += not torch.equal(item["video"][0], item["video"][1])
        again = dataset[(index, 3)]  # a resume or another worker asks again: the same clips
        assert torch.equal(again["video"], item["video"])
    assert differ >= len(dataset) - 1  # a crop-and-flip collision is possible, not likely
    assert calls == [i for i in range(len(dataset)) for _ in range(2)]  # one decode per item


def test_without_augmentation_the_views_are_the_one_decoded_clip(synth_root):
    dataset, _ = build_dataset({**NODE, "root": str(synth_root), "transforms": []}, key="d")
    set_num_sample(dataset, 3, key="d")
    item = dataset[(0, 0)]
    assert torch.equal(item["video"][0], item["video"][1]) and torch.equal(item["video"][0],
                                                                         item["video"][2])


def test_collate_is_sample_major_like_videomae():
    items = [{"video": torch.full((2, 1), float(i)), "label": torch.tensor([i, i]), "index": i,
              "view": 0, "bad": ""} for i in range(3)]
    batch = RepeatedCollate(2, ("video", "label"))(items)
    assert batch["video"].flatten().tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["index"].tolist() == [0, 0, 1, 1, 2, 2] and batch["bad"] == ["", "", ""]
