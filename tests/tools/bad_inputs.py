"""The bad recipe values of issue 10, each with the one line `tubelet config|train` must answer.
Shared by tests/test_validate.py and benchmarks/validation_latency.py."""
from __future__ import annotations

NORMALIZE = "{type: normalize, mean: [0.45, 0.45, 0.45], std: [0.225, 0.225, 0.225]}"

# (recipe under configs/, overrides, the expected stderr line without "error: ")
BAD_INPUTS: list[tuple[str, list[str], str]] = [
    ("quickstart.yaml", ["optimizer.lr=abc"], "optimizer.lr: expected float, got string 'abc'"),
    ("quickstart.yaml", ["train.epochs=ten"], "train.epochs: expected int, got string 'ten'"),
    ("quickstart.yaml", ["model.depth=2.5"], "model.depth: expected int, got number 2.5"),
    ("quickstart.yaml", ["data.num_workers=-1"], "data.num_workers: must be >= 0, got -1"),
    ("quickstart.yaml", ["model.num_classes=10"],
     "task.num_classes: 10, but data.train.num_classes is 8"),
    ("quickstart.yaml", ["model={type: resnet3d_18, num_classes: 8}", "optimizer.layer_decay=0.75"],
     "optimizer.layer_decay: model 'resnet3d_18' has no layer ids to decay by (a ViT has them); "
     "remove layer_decay"),
    ("debug/linprobe_tiny.yaml", ["model.backbone.dpeth=3"],
     "model.backbone.dpeth: unknown key; did you mean 'depth'?"),
    ("debug/finetune_tiny.yaml", ["task.mixup.mixup_alpah=1"],
     "task.mixup.mixup_alpah: unknown key; did you mean 'mixup_alpha'?"),
    ("quickstart.yaml", ["data.val=null", "data.test=null", "data.train={type: repeat, times: 2, dataset: {type: synthetic_actions, "
                         "root: data/synth_actions, num_frame: 8}}"],
     "data.train.dataset.num_frame: unknown key; did you mean 'num_frames'?"),
    ("quickstart.yaml", ["data.val=null", "data.test=null", "data.train={type: composed, datasets: [{type: synthetic_actions, "
                         "root: data/synth_actions, stride: 0}]}"],
     "data.train.datasets[0].stride: must be >= 1, got 0"),
    ("debug/finetune_tiny.yaml", ["model.pretrained=runs/no_such_run"],
     "model.pretrained: no such file or directory 'runs/no_such_run'"),
    ("quickstart.yaml", ["train.clip_grad=-1"], "train.clip_grad: must be > 0, got -1"),
    ("quickstart.yaml", ["train.eval_interval=0"], "train.eval_interval: must be >= 1, got 0"),
    ("quickstart.yaml", ["train.best_metric=val/acc"],
     "train.best_metric: 'val/acc' is not a metric of task 'classification' (val/acc1, val/acc5, "
     "val/mean_class_acc); did you mean 'val/acc5'?"),
    ("quickstart.yaml", ["schedule.min_lr=abc"], "schedule.min_lr: expected float or null, got string 'abc'"),
    ("quickstart.yaml", ["run=.inf"], "run: expected a mapping, got number inf"),
    ("quickstart.yaml", ["train=7"], "train: expected a mapping, got integer 7"),
    ("quickstart.yaml", ["data=true"], "data: expected a mapping, got boolean True"),
    ("quickstart.yaml", ["imports=[null]"], "imports[0]: expected a module name, got null"),
    # docs/recipes.md's old `base:` example: a 32 px crop for a 40 px model
    ("quickstart.yaml", [f"data.train.transforms=[{{type: random_crop, size: 32}}, {NORMALIZE}]"],
     "data.train.transforms[0].size: makes 32x32 frames, but model.img_size is 40x40"),
    ("quickstart.yaml", ["data.train.num_frames=16"],
     "data.train.num_frames: clips of 16 frames, but model.num_frames is 8"),
    ("quickstart.yaml", ["hooks=[{type: ema, decai: 0.9}]"],
     "hooks[0].decai: unknown key; did you mean 'decay'?"),
    ("quickstart.yaml", ["hooks=[{type:ema}]"],  # YAML's {"type:ema": null}
     "hooks: 'type:ema' is one key; put a space after the colon: {type: ema}"),
    ("quickstart.yaml", ["model={type:vit_tiny}"],  # was: an interpolation error elsewhere
     "model: 'type:vit_tiny' is one key; put a space after the colon: {type: vit_tiny}"),
    ("quickstart.yaml", ["hooks=[{type: ema, decay:0.9}]"],
     "hooks: 'decay:0.9' is one key; put a space after the colon: {decay: 0.9}"),
    ("quickstart.yaml", ["data.train.backend=pyva"],
     "data.train.backend: unknown 'pyva'; choose one of ['pyav', 'torchcodec', 'decord']; "
     "did you mean 'pyav'?"),
    ("quickstart.yaml", ["schedule.min_lr=0.5"],
     "schedule.min_lr: 0.5 is above the peak lr 0.001 (optimizer.lr); the cosine schedule "
     "would raise the lr as the run goes on"),
    ("quickstart.yaml", ["optimizer.weight_decay=1000"],
     "optimizer.weight_decay: 1000 x the peak lr 0.001 = 1; each step would scale every weight "
     "by 0 (1 - lr x weight_decay must stay above 0)"),
    ("debug/classify_tiny.yaml", ["data.train.num_classes=0"],  # was refused only by train
     "data.train.num_classes: must be in [2, 16], got 0"),
    ("quickstart.yaml", ["hooks=[{type: ema, decay: 1.0}]"],  # an EMA that never moves;
     "hooks[0].decay: must be in (0, 1), got 1.0"),              # was refused only by train
    # MAE's loss is a mean over hidden tokens: a ratio that rounds to none hidden (the debug
    # model has 2 x 2 x 2 tokens) crashed in the loss with a traceback
    ("debug/mae_pretrain_tiny.yaml", ["model.mask_ratio=0.1"],
     "model.mask_ratio: 0.1 of 8 tokens (tube mask) hides none; the loss is computed on hidden "
     "tokens"),
    ("debug/mae_pretrain_tiny.yaml", ["model.mask_ratio=0"],
     "model.mask_ratio: 0 of 8 tokens (tube mask) hides none; the loss is computed on hidden "
     "tokens"),
]
