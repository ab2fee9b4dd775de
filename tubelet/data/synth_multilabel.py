"""The `multilabel` synthetic layout: two motions at once, real H.264 MP4s with two labels each.

    videos/<split>_<nnnn>.mp4     two actors, each moving as one of synth.py's motion classes
    train.txt, test.txt           video_list_multilabel lines "videos/<name>.mp4 k,j"
    train.csv, test.csv           multilabel_csv: header "path,labels", labels "name_k;name_j"
    classes.txt                   the class names, line k is class k

Video n of a split shows class n mod num_classes and one other class drawn at random, so every
class has positives in both splits; `num_train_per_class` x num_classes videos per split. With
scores at random, a class's AP is about its prevalence, 2 / num_classes: chance for mAP.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tubelet.data.synth import render_video, write_mp4


def write_multilabel(root: Path, clips: "Clips") -> None:  # noqa: F821  (synth_layouts.Clips)
    names = [name for name, _ in clips.classes]
    (root / "videos").mkdir()
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    num_classes = len(names)
    for split_id, split in enumerate(("train", "test")):
        lines, rows = [], ["path,labels"]
        for n in range(num_classes * clips.counts[split]):
            rng = np.random.default_rng([clips.seed, 40 + split_id, n])
            first = n % num_classes
            second = int(rng.integers(0, num_classes - 1))
            second += second >= first  # any class but the first
            frames = render_video(rng, velocity=clips.classes[first][1],
                                  more_actors=(clips.classes[second][1],),
                                  num_frames=clips.num_frames, size=clips.size)
            name = f"videos/{split}_{n:04d}.mp4"
            write_mp4(root / name, frames, fps=clips.fps)
            labels = sorted((first, second))
            lines.append(f"{name} {labels[0]},{labels[1]}\n")
            rows.append(f"{name},{names[labels[0]]};{names[labels[1]]}")
        (root / f"{split}.txt").write_text("".join(lines))
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
