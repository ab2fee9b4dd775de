"""`tubelet run EXPERIMENT.yaml`: linked stages (pretrain -> finetune -> test) as one resumable
experiment.

    # configs/experiments/synthetic.yaml
    dir: runs/synthetic                  # default runs/<file name>; stage run dirs go below
    stages:                              # run in this order
      pretrain:
        recipe: ../synthetic/videomae_pretrain.yaml     # relative to this file
        overrides: {train.epochs: 2}                    # dotted recipe keys, as on the command line
      finetune:
        recipe: ../synthetic/videomae_finetune_10pct.yaml
        overrides: {model.pretrained: "${stages.pretrain.run_dir}"}
      evaluate:
        command: eval                    # train (default), eval, or any recipe command of the CLI
        recipe: ../synthetic/videomae_finetune_10pct.yaml
        overrides: {checkpoint: "${stages.finetune.run_dir}"}

Each stage is the CLI's own command, run as a child process (`python -m tubelet.cli COMMAND
RECIPE overrides... run.dir=... resume=auto`), so a stage behaves exactly as when typed by hand:
its exit codes, its resume, its process group. Why children and not calls in this process:
docs/experiments.md. Everything is validated before the first stage starts; a stage is skipped
when its run dir says it is finished (the last checkpoint's epoch or early stop, and the result
file a command writes), never because of a time stamp or experiment.json, which only reports.

The stages are read and checked in `stages.py`, judged finished from their run dirs in
`state.py` and run in `runner.py`.
"""
from __future__ import annotations


from tubelet.experiment.runner import Report, _Forwarder, run_experiment  # noqa: F401
from tubelet.experiment.stages import Stage, check_experiment, load_experiment  # noqa: F401
from tubelet.experiment.state import final_metrics, finished  # noqa: F401
