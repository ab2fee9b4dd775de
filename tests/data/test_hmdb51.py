import re
import shutil

import pytest
import torch

from tubelet.data.datasets.hmdb51 import HMDB51
from tubelet.data.datasets.synthetic import SyntheticActions
from tubelet.data.decode import decode_frames
from tubelet.data.sampling import interval_indices
from tubelet.data.transforms import Compose, RandomCrop, RandomHorizontalFlip
from tubelet.registry import DATASETS, ConfigError, build


class RecordGenerator:
    """A real (identity) transform that remembers the generator it was given."""

    def __init__(self) -> None:
        self.generators = []

    def __call__(self, video, *, generator):
        self.generators.append(generator)
        return video


@pytest.fixture
def editable_root(synth_root, tmp_path):
    """A copy of the small dataset that a test may break."""
    return shutil.copytree(synth_root, tmp_path / "copy")


def test_classes_labels_and_subsets(synth_root):
    train, test = HMDB51(str(synth_root)), HMDB51(str(synth_root), subset="test")
    assert train.classes == test.classes == ["move_left", "move_right"]
    assert train.num_classes == 2 and (len(train), len(test)) == (6, 4)
    for dataset in (train, test):
        for (path, label, where), info in zip(dataset.samples, dataset.infos):
            assert dataset.classes[label] == path.parent.name and info.num_frames == 12
            assert "_test_split1.txt:" in where
    assert not {s.path for s in train.samples} & {s.path for s in test.samples}


def test_train_item_is_seeded_by_index_and_epoch(synth_root):
    dataset = HMDB51(str(synth_root), num_frames=4, stride=2, seed=0,
                     transform=Compose([RandomCrop(16), RandomHorizontalFlip()]))
    item = dataset[(3, 0)]
    assert item["video"].shape == (3, 4, 16, 16) and item["video"].dtype == torch.float32
    assert 0.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0
    assert item["label"] == dataset.samples[3][1] and item["index"] == 3
    assert torch.equal(item["video"], dataset[(3, 0)]["video"])
    assert torch.equal(item["video"], dataset[3]["video"])  # a bare index is epoch 0
    epochs = [dataset[(3, epoch)]["video"] for epoch in range(1, 6)]
    assert any(not torch.equal(item["video"], video) for video in epochs)
    reseeded = HMDB51(str(synth_root), num_frames=4, stride=2, seed=1,
                      transform=Compose([RandomCrop(16), RandomHorizontalFlip()]))
    assert any(not torch.equal(dataset[i]["video"], reseeded[i]["video"]) for i in range(6))


def test_test_item_is_the_centred_clip_without_generator(synth_root):
    record = RecordGenerator()
    dataset = HMDB51(str(synth_root), subset="test", num_frames=4, stride=2, transform=record)
    item = dataset[(1, 7)]
    assert record.generators == [None]
    path, num_video_frames = dataset.samples[1].path, dataset.infos[1].num_frames
    indices = interval_indices(num_video_frames, num_frames=4, stride=2, generator=None)
    expected = decode_frames(path, indices).permute(3, 0, 1, 2).float() / 255  # (C,T,H,W)
    assert torch.equal(item["video"], expected)
    assert torch.equal(item["video"], dataset[(1, 0)]["video"])


def test_train_transform_gets_a_generator(synth_root):
    record = RecordGenerator()
    HMDB51(str(synth_root), transform=record)[0]
    assert isinstance(record.generators[0], torch.Generator)


def test_missing_directories(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="root: no such directory"):
        HMDB51(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="splits_dir: no such directory"):
        HMDB51(str(synth_root), splits_dir="other")
    with pytest.raises(ConfigError, match=r"_test_split3\.txt"):
        HMDB51(str(synth_root), split=3)
    with pytest.raises(ConfigError, match="subset"):
        HMDB51(str(synth_root), subset="val")


@pytest.mark.parametrize("bad_line", ["c1_v0009.mp4", "c1_v0009.mp4 3", "a b 1"])
def test_malformed_split_line_names_file_and_line(editable_root, bad_line):
    split_file = editable_root / "splits" / "move_left_test_split1.txt"
    lines = split_file.read_text().splitlines()
    split_file.write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    with pytest.raises(ConfigError, match=r"move_left_test_split1\.txt:3: expected"):
        HMDB51(str(editable_root), subset="test")


def test_missing_or_empty_video_is_bad_data_named_by_file_and_line(editable_root):
    # Not fatal: the file is listed (file:line) and its items are replaced by another sample.
    (editable_root / "videos" / "move_right" / "c0_v0001.mp4").unlink()
    (editable_root / "videos" / "move_right" / "c0_v0002.mp4").write_bytes(b"")
    dataset = HMDB51(str(editable_root))
    reasons = [reason for _, reason in dataset.bad_files]
    assert len(reasons) == 2
    assert re.search(r"move_right_test_split1\.txt:2: .*c0_v0001\.mp4: no such file", reasons[0])
    assert re.search(r"move_right_test_split1\.txt:3: .*c0_v0002\.mp4: empty file", reasons[1])
    bad_index = [s.path.name for s in dataset.samples].index("c0_v0001.mp4")
    item = dataset[bad_index]
    path, reason = item["bad"].split("\n")[0].split("\t")
    assert path.endswith("c0_v0001.mp4") and reason == reasons[0] and item["index"] == bad_index
    assert torch.equal(item["video"], dataset[bad_index]["video"])  # deterministic


def test_synthetic_actions_reads_the_generated_root(synth_root, synth_params):
    assert {"hmdb51", "synthetic_actions"} <= set(DATASETS.names())
    node = {"type": "synthetic_actions", "root": str(synth_root), "subset": "test",
            "num_classes": 2, "num_train_per_class": 3, "num_test_per_class": 2,
            "video_frames": 12, "size": 24, "num_frames": 4}
    dataset = build(node, DATASETS)
    assert isinstance(dataset, SyntheticActions) and isinstance(dataset, HMDB51)
    assert len(dataset) == 4 and dataset.classes == ["move_left", "move_right"]
    assert dataset[0]["video"].shape == (3, 4, 24, 24)
    with pytest.raises(ValueError, match="other parameters"):
        SyntheticActions(str(synth_root), num_classes=2, num_train_per_class=3,
                         num_test_per_class=2, video_frames=12, size=24, data_seed=1)
