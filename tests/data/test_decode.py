from pathlib import Path

import pytest
import torch

from data.index_video import INDEX_SIZE, NUM_INDEX_FRAMES, frame_ids
from tubelet.data.decode import DecodeError, backend_available, decode_frames, probe

NAMES = ["gop250", "gop4", "mkv"]


@pytest.mark.parametrize("name", NAMES)
def test_probe_reads_count_rate_and_size(index_videos, name):
    # The MKV has no frame count in its header, so this also covers counting packets.
    info = probe(index_videos[name])
    assert (info.num_frames, info.fps, info.height, info.width) == (
        NUM_INDEX_FRAMES, 8.0, INDEX_SIZE, INDEX_SIZE)
    assert info.mode == "grid" and info.stream == 0 and info.rotation == 0


@pytest.mark.parametrize("name", NAMES)
def test_decode_all_frames_in_order(index_videos, name):
    video = decode_frames(index_videos[name], range(NUM_INDEX_FRAMES))
    assert video.dtype == torch.uint8
    assert video.shape == (NUM_INDEX_FRAMES, INDEX_SIZE, INDEX_SIZE, 3)
    assert frame_ids(video) == list(range(NUM_INDEX_FRAMES))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("indices", [[0], [29], [21, 22], [13, 14, 15, 16, 17],
                                     [21, 5, 5, 29, 13], [7, 7, 7], [28, 0, 14, 3]])
def test_decode_returns_exactly_the_requested_frames(index_videos, name, indices):
    video = decode_frames(index_videos[name], indices)
    assert video.shape[0] == len(indices)
    assert frame_ids(video) == indices


def test_repeated_index_gives_identical_frames(index_videos):
    video = decode_frames(index_videos["gop4"], [9, 2, 9])
    assert torch.equal(video[0], video[2])


@pytest.mark.parametrize("name", NAMES)
def test_index_past_the_end_raises_with_path(index_videos, name):
    with pytest.raises(DecodeError, match=str(index_videos[name].name)):
        decode_frames(index_videos[name], [3, NUM_INDEX_FRAMES])


def test_bad_indices_are_value_errors(index_videos):
    with pytest.raises(ValueError, match="empty"):
        decode_frames(index_videos["gop4"], [])
    with pytest.raises(ValueError, match="negative"):
        decode_frames(index_videos["gop4"], [-1, 2])


def _broken_files(index_videos, tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all " * 100)
    # An MP4 keeps its index at the end, so a cut file cannot even be opened.
    cut_mp4 = tmp_path / "cut.mp4"
    data = index_videos["gop4"].read_bytes()
    cut_mp4.write_bytes(data[: len(data) // 2])
    return {"missing": tmp_path / "missing.mp4", "empty": empty, "garbage": garbage,
            "cut_mp4": cut_mp4}


@pytest.mark.parametrize("backend", ["pyav", "decord", "torchcodec"])
@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "cut_mp4"])
def test_unreadable_files_raise_decode_error_with_path(index_videos, tmp_path, kind, backend):
    """Every backend reports a bad file as DecodeError (what the loader counts), never as
    its own exception type, which would kill the run."""
    if not backend_available(backend):
        pytest.skip(f"{backend} is not installed (optional extra)")
    path = _broken_files(index_videos, tmp_path)[kind]
    with pytest.raises(DecodeError, match=path.name):
        probe(path)
    with pytest.raises(DecodeError, match=path.name):
        decode_frames(path, [0, 1], backend=backend)


def test_truncated_mkv_raises_when_frames_are_missing(index_videos, tmp_path):
    # MKV is streamable: a cut file opens and decodes, but the last frames are gone. (The first
    # keyframe is a third of this tiny file, so cut late enough to keep it.)
    cut = tmp_path / "cut.mkv"
    data = index_videos["mkv"].read_bytes()
    cut.write_bytes(data[: len(data) * 4 // 5])
    assert frame_ids(decode_frames(cut, [0, 1])) == [0, 1]
    with pytest.raises(DecodeError, match="cut.mkv"):
        decode_frames(cut, [0, NUM_INDEX_FRAMES - 1])
