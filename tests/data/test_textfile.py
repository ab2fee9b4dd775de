"""Annotation files are read with the recipe's limits: regular files only, UTF-8 with an error
naming file:line (never quoting it), through every reader that exists."""
import os

import pytest

from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError, build


def test_non_utf8_names_file_and_line_without_quoting_it(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"a.mp4 0\nb.mp4 1\nsecr\xe9t.mp4 2\n")
    with pytest.raises(ConfigError) as e:
        read_text(path)
    assert str(e.value) == f"{path}:3: not UTF-8 (byte 0xe9); save the file as UTF-8"


def test_fifo_directory_and_size_cap_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ConfigError, match="fifo: a FIFO, socket or device, expected a text file"):
        read_text(tmp_path / "fifo")  # would block forever if opened
    with pytest.raises(ConfigError, match="a directory, expected a text file"):
        read_text(tmp_path)
    (tmp_path / "big.txt").write_text("x" * 100)
    with pytest.raises(ConfigError, match="100 bytes; an annotation file may have at most 10"):
        read_text(tmp_path / "big.txt", max_bytes=10)


@pytest.mark.parametrize("node", [
    {"type": "video_list", "annotations": "ann.txt"},
    {"type": "kinetics", "annotations": "ann.txt", "root": "."},
    {"type": "ssv2", "annotations": "ann.txt", "labels": "ann.txt", "root": "."},
    {"type": "gaze360", "annotations": "ann.txt", "root": "."},
])
def test_every_annotation_reader_reports_encoding_errors_by_line(tmp_path, monkeypatch, node):
    import tubelet.data.datasets  # noqa: F401 - registers the datasets
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ann.txt").write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(ConfigError, match=r"ann.txt:1: not UTF-8 \(byte 0xff\)"):
        build(node, DATASETS)
