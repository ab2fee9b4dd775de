"""`tubelet data check RECIPE --verify N` on a mixed folder (the whole corpus as a video_list):
every file compared with a full sequential decode, the ones that differ or are refused listed
with their container, codec and reason."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import DEBUG_RECIPE
from data.corpus import CASES, write_corpus
from tubelet.cli import main
from tubelet.data.decode import backend_available


@pytest.fixture(scope="module")
def mixed_recipe(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The debug recipe on a video_list of every corpus file (those the ffmpeg command writes
    only when it is installed)."""
    root = tmp_path_factory.mktemp("mixed")
    files = write_corpus(root / "videos")
    (root / "list.txt").write_text("".join(f"videos/{name} {k % 2}\n"
                                           for k, name in enumerate(files)))
    recipe = yaml.safe_load(DEBUG_RECIPE.read_text())
    for split, subset in (("train", "train"), ("val", "test")):
        recipe["data"][split] = {"type": "video_list", "annotations": str(root / "list.txt"),
                                 "subset": subset, "num_frames": 4, "stride": 2,
                                 "transforms": recipe["data"][split]["transforms"]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, files


def _check(recipe: Path, *overrides: str) -> int:
    return main(["data", "check", str(recipe), *overrides, "--items", "2", "--verify", "100"])


def _lines(out: str) -> dict[str, str]:
    """file name -> its --verify line (train split only)."""
    train = out.split("data.val:")[0]
    return {line.split(": ")[0].rsplit("/", 1)[-1]: line for line in train.splitlines()
            if line.startswith("  /") and "[" in line}


def test_verify_finds_every_file_exact_on_pyav_and_names_what_is_unusual(mixed_recipe, capsys):
    recipe, files = mixed_recipe
    assert _check(recipe) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    assert set(lines) == set(files)
    assert all(": exact [" in line for line in lines.values()), out
    assert "[avi, h264, sequential: timestamps not usable, B-frames in AVI]" in \
        lines["h264_bframes.avi"]
    assert "variable frame rate" in lines["vfr_25to10.mkv"]
    assert f"0 of {len(files)} verified files differ or are refused" in out


@pytest.mark.parametrize("backend", ["decord", "torchcodec"])
def test_verify_lists_the_files_a_backend_refuses_or_gets_wrong(mixed_recipe, capsys, backend):
    if not backend_available(backend):
        pytest.skip(f"optional decoder {backend!r} is not installed")
    recipe, files = mixed_recipe
    code = _check(recipe, f"data.train.backend={backend}", f"data.val.backend={backend}")
    out, err = capsys.readouterr()
    assert code == 2 and "missing or corrupt files (listed above)" in err
    lines = _lines(out)
    for name in ("h264_bframes.avi", "mpeg4_bframes.avi"):
        assert f"refused by {backend}:" in lines[name] and "B-frames in AVI" in lines[name]
    assert "refused by" in lines["h264_open_gop.mkv"]
    assert "H.264 keyframes without IDR" in lines["h264_open_gop.mkv"]
    for name in ("h264.mp4", "vp9.webm", "two_streams.mkv"):
        assert ": exact [" in lines[name]
    assert all(CASES[name].container.split(",")[0][:3] in lines[name] for name in files
               if CASES[name].container != "matroska")
