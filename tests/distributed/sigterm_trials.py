"""N trials of SIGTERM to rank 0 only on a 2-rank torchrun (gloo, CPU); prints each trial's
worker exit codes and the count where every rank exited 75. CI runs 1 trial
(test_ranks.py::test_sigterm_to_rank0_makes_every_rank_exit_75); this runs the 10:

    PYTHONPATH=$PWD:tests python -m tests.distributed.sigterm_trials 10
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tubelet.config import load_config
from tubelet.data.synth import ensure_synthetic_dataset

from .conftest import DDP_RECIPE
from .test_ranks import sigterm_rank0_trial


def main(trials: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        node = load_config(DDP_RECIPE)["data"]["train"]
        root = tmp_path / "data" / "synth_tiny"
        ensure_synthetic_dataset(root, num_classes=node["num_classes"],
                                        num_train_per_class=node["num_train_per_class"],
                                        num_test_per_class=node["num_test_per_class"],
                                        num_frames=node["video_frames"], size=node["size"])
        good = 0
        for i in range(trials):
            codes, _ = sigterm_rank0_trial(tmp_path, root, f"run{i}")
            good += codes == [75, 75]
            print(f"trial {i + 1}: worker exit codes {codes}", flush=True)
        print(f"{good}/{trials} trials: every rank exited 75")
        return 0 if good == trials else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
