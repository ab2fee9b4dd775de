"""The metadata index: flat tables, an .npz cache that is rebuilt (never misread) when old, and
one prober per node: concurrent processes probe each file once, and a prober that dies without
writing lets a waiter probe instead of hanging it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tubelet.data.metadata as metadata
from data.media import write_video
from tubelet.data.decode import VideoInfo, probe
from tubelet.data.metadata import INDEX_VERSION, prober_lock, read_index, video_infos
from tubelet.data.tables import PathTable, SampleTable, info_dtype

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("meta")
    first = write_video(root / "v" / "a" / "clip0.mp4", num_frames=7)
    paths = [first, write_video(root / "v" / "b" / "clip1.mp4", num_frames=9, seed=1)]
    for k in range(2, 6):  # hard links: same bytes, distinct paths
        os.link(first, root / "v" / "a" / f"clip{k}.mp4")
        paths.append(root / "v" / "a" / f"clip{k}.mp4")
    return paths


def test_path_table_round_trips_any_paths():
    paths = ["/d/a/x.mp4", "/d/a/y z.mp4", "/d/ab.mp4", "rel/p.mp4", "/d/\u00e9\u00e8.mp4"]
    for subset in (paths[:3], paths[:1], paths[3:4], paths, []):
        table = PathTable(subset)
        assert [str(p) for p in table] == subset and len(table) == len(subset)
    assert PathTable(paths[:3]).prefix == b"/d/"  # a directory, not "/d/a" of "ab.mp4"
    assert PathTable(paths[:3]).same_as(PathTable(paths[:3]))
    assert not PathTable(paths[:3]).same_as(PathTable(paths[1:4]))


def test_sample_table_targets_and_where():
    import torch
    rows = [(Path("/x/a.mp4"), 2, "list.txt:{line}", 3),
            (Path("/x/b.mp4"), 0, "t.json:[{line}]", 0)]
    table = SampleTable.build(rows)
    assert [tuple(s) for s in table] == [(Path("/x/a.mp4"), 2, "list.txt:3"),
                                         (Path("/x/b.mp4"), 0, "t.json:[0]")]
    assert table.targets.dtype == np.int32 and table.labelled
    vec = SampleTable.build([(Path("/x/a.mp4"), torch.tensor([0.6, 0.0, 0.8]), "{path}", 0)])
    assert torch.equal(vec[0].target, torch.tensor([0.6, 0.0, 0.8])) and vec[0].where == "/x/a.mp4"
    bare = SampleTable.build([(Path("/x/a.mp4"), None, "l:{line}", 1)])
    assert not bare.labelled and bare[0].target is None


def test_info_columns_follow_video_info():
    from dataclasses import fields
    assert info_dtype().names == tuple(f.name for f in fields(VideoInfo))


def test_index_is_flat_cached_and_reused_without_probing(videos, tmp_path, monkeypatch):
    index_file = tmp_path / "index.npz"
    missing = videos[0].with_name("gone.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 10)
    paths = [*videos, missing, empty, garbage]
    infos, errors = video_infos(paths, index_file=index_file)
    assert infos.dtype == info_dtype() and infos.dtype.names == info_dtype().names
    assert list(infos["num_frames"]) == [7, 9, 7, 7, 7, 7, 0, 0, 0]
    assert [probe(p) for p in videos] == [VideoInfo(**{n: r[n].item() for n in infos.dtype.names})
                                          for r in infos[:6]]
    assert sorted(errors) == [6, 7, 8]
    assert errors[6].endswith("gone.mp4: no such file") and errors[7].endswith(": empty file")
    assert "garbage.mp4" in errors[8]
    index = read_index(index_file)
    assert len(index.paths) == 7 and list(index.errors) == [6]  # the garbage file's error is kept

    calls = []
    monkeypatch.setattr(metadata, "probe", lambda p: calls.append(p) or probe(p))
    again, errors_again = video_infos(paths, index_file=index_file)
    assert calls == [] and np.array_equal(again, infos) and errors_again == errors
    os.utime(videos[1], ns=(1, 1))  # a changed mtime means a changed file: probed again
    video_infos(paths, index_file=index_file)
    assert calls == [videos[1]]


def test_split_sharing_an_index_keeps_the_other_split(videos, tmp_path, monkeypatch):
    index_file = tmp_path / "index.npz"
    video_infos(videos[:3], index_file=index_file)
    video_infos(videos[3:], index_file=index_file)
    calls = []
    monkeypatch.setattr(metadata, "probe", lambda p: calls.append(p) or probe(p))
    infos, _ = video_infos(videos[::-1], index_file=index_file)
    assert calls == [] and list(infos["num_frames"]) == [7, 7, 7, 7, 9, 7]


@pytest.mark.parametrize("content", ["old_json", "old_version", "other_fields", "garbage"])
def test_an_old_or_foreign_index_is_rebuilt_not_misread(videos, tmp_path, content):
    index_file = tmp_path / "index.npz"
    if content == "old_json":  # INDEX_VERSION 1 was JSON with other numbers for the same path
        index_file.write_text('{"version": 1, "files": {"%s": [1, 2, 99, 1.0, 1, 1]}}' % videos[0])
    elif content == "garbage":
        index_file.write_bytes(b"PK\x03\x04 truncated")
    else:
        video_infos(videos[:1], index_file=index_file)
        with np.load(index_file) as z:
            arrays = dict(z)
        if content == "old_version":
            arrays["version"] = np.array(INDEX_VERSION - 1)
            arrays["infos"]["num_frames"] = 99
        else:  # a VideoInfo field added since: the columns differ
            arrays["infos"] = np.zeros(1, [*info_dtype().descr, ("extra", "<i8")])
        with open(index_file, "wb") as f:
            np.savez(f, **arrays)
    infos, errors = video_infos(videos[:1], index_file=index_file)
    assert list(infos["num_frames"]) == [7] and not errors
    assert int(np.load(index_file)["version"]) == INDEX_VERSION


PROBER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import tubelet.data.metadata as metadata
    log, index_file, paths = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
    real = metadata.probe
    def counted(path):
        with open(log, "a") as f:
            f.write(f"{path}\\n")
        return real(path)
    metadata.probe = counted
    infos, errors = metadata.video_infos(paths, index_file=index_file)
    print(",".join(str(n) for n in infos["num_frames"]), len(errors))
""")


def _start(log: Path, index_file: Path, paths: list[Path]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", PROBER, str(log), str(index_file),
                             *map(str, paths)], env=env, stdout=subprocess.PIPE, text=True)


def test_concurrent_processes_probe_each_file_once(videos, tmp_path):
    log, index_file = tmp_path / "probes.log", tmp_path / "index.npz"
    procs = [_start(log, index_file, videos) for _ in range(3)]  # three "local ranks"
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 3
    assert outs == ["7,9,7,7,7,7 0"] * 3
    assert sorted(log.read_text().split()) == sorted(map(str, videos))  # once each, in total


def test_a_prober_that_dies_without_writing_lets_a_waiter_probe(videos, tmp_path):
    log, index_file = tmp_path / "probes.log", tmp_path / "index.npz"
    with prober_lock(index_file):  # this process plays the prober that then dies
        waiter = _start(log, index_file, videos[:2])
        time.sleep(3)
        assert waiter.poll() is None, "the waiter must wait while the lock is held"
        assert not log.exists()
    out = waiter.communicate(timeout=120)[0].strip()
    assert waiter.returncode == 0 and out == "7,9 0"
    assert sorted(log.read_text().split()) == sorted(map(str, videos[:2]))


def test_unwritable_index_location_probes_without_lock_or_index(videos, tmp_path):
    # A directory that does not exist refuses the lock file and the index, as a read-only one
    # does (a read-only mode would not stop root, who runs this suite in CI).
    index_file = tmp_path / "absent" / "index.npz"
    infos, errors = video_infos(videos[:2], index_file=index_file)
    assert list(infos["num_frames"]) == [7, 9] and not errors and not index_file.parent.exists()
