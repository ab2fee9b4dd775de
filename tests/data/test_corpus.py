"""Every case of the corpus (tests/data/corpus.py: containers, codecs, B-frames in AVI, VFR, AV1,
edit lists, MPEG-TS, rotation, two streams...) against the definition of a frame index: a full
sequential decode. PyAV must be exact on every file, every index asked alone and in clips;
an optional backend must be exact or refuse the file (DecodeError naming the reason)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.corpus import CASES, has_ffmpeg, reference, write_corpus
from tubelet.data.decode import (AVI_B_FRAMES, EDIT_LIST, MULTI_VIDEO, NON_IDR_KEYS, OPEN_GOP,
                                 ROTATED, START_OFFSET, VFR, DecodeError, backend_available,
                                 decode_frames, probe)

# What probe() must find in each case (a subset of its traits) and the PyAV path it picks.
EXPECTED = {"mpeg4_bframes.avi": (AVI_B_FRAMES, "sequential"),
            "xvid_packed.avi": (AVI_B_FRAMES, "sequential"),
            "h264_bframes.avi": (AVI_B_FRAMES, "sequential"),
            "vfr_dropped.mp4": (VFR, "table"), "vfr_25to10.mkv": (VFR, "table"),
            "edit_list_cut.mp4": (EDIT_LIST, "grid"), "mpeg2.ts": (START_OFFSET, "grid"),
            "rotated.mp4": (ROTATED, "grid"), "two_streams.mkv": (MULTI_VIDEO, "grid"),
            "hevc.mp4": (OPEN_GOP, "grid"), "h264_open_gop.mkv": (NON_IDR_KEYS, "grid")}
# A backend that returns a wrong frame (or fails on one index only) on a file it does not
# refuse, once measured, goes here: shown as an xfail that fails when it is fixed. (Empty since
# H.264 keyframes without IDR are found by probe(): decord returned frame 38 for 39 there.)
KNOWN_WRONG: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    root = tmp_path_factory.mktemp("corpus")
    return {name: (path, reference(path)) for name, path in write_corpus(root).items()}


def _case(corpus, name: str) -> tuple[Path, np.ndarray]:
    if CASES[name].tool == "ffmpeg" and not has_ffmpeg():
        pytest.skip(f"{name} is written by the ffmpeg command line, which is missing "
                    "(apt-get install ffmpeg)")
    return corpus[name]


def _clips(n: int) -> list[list[int]]:
    """Several clip shapes: contiguous, strided, strided from the end, scattered unsorted with
    repeats, the whole video backwards."""
    rng = np.random.default_rng(n)
    clips = [list(range(s, min(n, s + 8))) for s in range(0, n, 7)]
    clips += [list(range(s, n, 3))[:6] for s in range(0, n - 3, 5)]
    clips += [list(range(n - 1, -1, -4))]
    clips += [rng.integers(0, n, int(rng.integers(2, 7))).tolist() for _ in range(6)]
    return clips + [list(range(n))[::-1]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_probe_counts_frames_as_a_sequential_decode_does(corpus, name):
    path, ref = _case(corpus, name)
    info = probe(path)
    assert (info.num_frames, info.height, info.width) == ref.shape[:3]
    trait, mode = EXPECTED.get(name, (0, "grid"))
    assert info.traits & trait == trait, info.reasons()
    assert info.mode == mode


@pytest.mark.parametrize("name", sorted(CASES))
def test_pyav_returns_every_index_alone_and_in_clips(corpus, name):
    path, ref = _case(corpus, name)
    info = probe(path)
    for k in range(len(ref)):
        assert np.array_equal(decode_frames(path, [k], info=info).numpy(), ref[[k]]), (name, k)
    for clip in _clips(len(ref)):
        assert np.array_equal(decode_frames(path, clip, info=info).numpy(), ref[clip]), clip
    # Without the metadata index's info (probed on the spot), the same frames.
    assert np.array_equal(decode_frames(path, [len(ref) - 1, 0]).numpy(), ref[[-1, 0]])
    with pytest.raises(DecodeError, match="not found"):
        decode_frames(path, [len(ref)], info=info)


@pytest.mark.parametrize("backend", ["decord", "torchcodec"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_optional_backend_is_exact_or_refuses_the_file(corpus, name, backend):
    if not backend_available(backend):
        pytest.skip(f"optional decoder {backend!r} is not installed")
    path, ref = _case(corpus, name)
    info = probe(path)
    outcomes = []
    for indices in [[k] for k in range(len(ref))] + _clips(len(ref)):
        try:
            video = decode_frames(path, indices, backend=backend, info=info).numpy()
        except DecodeError as err:
            outcomes.append(str(err))
            continue
        outcomes.append("exact" if np.array_equal(video, ref[indices]) else f"wrong {indices}")
    if (backend, name) in KNOWN_WRONG:  # still wrong? (if not, take it off the list)
        assert any(o.startswith("wrong") or "exact" not in o for o in outcomes)
        assert "exact" in outcomes
        pytest.xfail(f"{backend} on {name}: {KNOWN_WRONG[backend, name]}")
    assert not [o for o in outcomes if o.startswith("wrong")], (backend, name)
    refused = [o for o in outcomes if o != "exact"]
    # Refused means every request refused, with a reason; never some frames and not others.
    assert not refused or len(refused) == len(outcomes), refused[0]
