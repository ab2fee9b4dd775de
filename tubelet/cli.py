"""`tubelet train|eval|config|data ...`: parse argv, run, and turn user errors into exit code 2.

Heavy imports (torch, the registries) happen only after the recipe has been read and its
top-level keys checked, so a typo is answered in well under a second.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tubelet.registry import ConfigError

EXIT_USER_ERROR = 2
# Training stopped on a non-finite loss or gradient norm (train.nan_guard); no update applied.
EXIT_NONFINITE = 3
# A stop signal (SIGTERM/SIGUSR1) was honoured: every rank saved one checkpoint at the same
# step. EX_TEMPFAIL ("try again later"): a batch script requeues on it, resume=auto continues.
EXIT_PREEMPTED = 75
# Ctrl-C (SIGINT) was honoured the same way (128 + SIGINT, the shell's code for it); a second
# Ctrl-C aborts at once without saving, also 130.
EXIT_INTERRUPTED = 130

USAGE = """\
tubelet train RECIPE.yaml [key.sub=value ...]      train (resume with resume=auto)
tubelet eval RECIPE.yaml checkpoint=PATH [...]     evaluate a checkpoint file, run dir or
                                                   .safetensors export on data.val
tubelet test RECIPE.yaml [checkpoint=PATH] [...]   test on data.test (default: the run dir's
                                                   train.test_checkpoint); results in the run dir
tubelet config RECIPE.yaml [key.sub=value ...]     print the resolved, validated recipe
tubelet export CHECKPOINT|RUN_DIR OUT.safetensors|OUT.onnx [--encoder]
                                                   weights with class names, or ONNX
tubelet predict CHECKPOINT|RUN_DIR INPUT... [--top-k 5 --views TxS --window S --stride S]
                                                   top-k classes of videos, folders or
                                                   lists, as JSON lines
tubelet run EXPERIMENT.yaml [key=value ...]        linked stages (pretrain -> finetune -> test),
                                                   resumable; docs/experiments.md
tubelet data synth DIR [--num-classes N ...]       write the synthetic action dataset
tubelet data check RECIPE.yaml [key=value ...]     class counts, bad files, decode speed
tubelet report RUN_DIR... [--out report.png]       curves of runs overlaid, a table of results
tubelet visualize RUN_DIR [VIDEO...] [--out DIR]   MAE/VideoMAE reconstructions, a PNG per clip
tubelet COMMAND --help                             one command's arguments and defaults

exit codes: 0 done, 2 user error, 3 non-finite loss (train.nan_guard),
            4 predict: some videos could not be read (their rows carry "error"),
            75 preempted by SIGTERM/SIGUSR1 after saving a checkpoint (requeue, resume=auto),
            130 interrupted by Ctrl-C after saving a checkpoint (a second Ctrl-C: no save)
"""


# What each command does, shown by `tubelet COMMAND --help` above its own arguments only.
COMMANDS = {
    "train": "Train from a recipe; overrides are dotted.key=value, the value read as YAML.",
    "eval": "Evaluate on data.val and print the metrics as JSON. Needs checkpoint=PATH: a "
            "checkpoint file, a run directory (its checkpoints/last.pt) or a .safetensors export.",
    "config": "Print the resolved recipe after the same validation as train; exit 2 on an error.",
    "test": "Test on data.test and write test_results.json, test/ (predictions, per-class "
            "accuracy, confusion matrix) and test/* metrics rows into the recipe's run dir. "
            "checkpoint=PATH: a checkpoint file, a run directory (its checkpoints/"
            "<train.test_checkpoint>.pt) or a .safetensors export; default: the run dir's.",
}


def _parser() -> argparse.ArgumentParser:
    from tubelet import __version__
    p = argparse.ArgumentParser(prog="tubelet", usage=USAGE)
    p.add_argument("--version", action="version", version=f"tubelet {__version__}")
    # prog: without it each command's usage line would repeat the whole USAGE block
    sub = p.add_subparsers(dest="command", required=True, prog="tubelet", metavar="COMMAND")
    for name, text in COMMANDS.items():
        s = sub.add_parser(name, help=text, description=text)
        _recipe_arguments(s)
    text = ("Write a checkpoint's model as .safetensors (weights, with class names and eval "
            "preprocessing in the metadata) or .onnx (the classifier, dynamic batch); the "
            "format is OUT's suffix.")
    export = sub.add_parser("export", help=text, description=text)
    export.add_argument("checkpoint", type=Path, metavar="CHECKPOINT|RUN_DIR",
                        help="a checkpoint file, or a run directory (its checkpoints/last.pt)")
    export.add_argument("out", type=Path, metavar="OUT.safetensors|OUT.onnx",
                        help="the file to write")
    export.add_argument("--encoder", action="store_true",
                        help=".onnx: the encoder alone, video -> pooled features (B, D)")
    _predict_parser(sub)
    text = ("Run an experiment's stages in order (each a recipe, overrides and a command), "
            "skipping finished ones and resuming the interrupted one; writes experiment.json.")
    run = sub.add_parser("run", help=text, description=text)
    run.add_argument("experiment", type=Path, metavar="EXPERIMENT.yaml", help="the experiment")
    run.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                     help="dir=PATH, stages.NAME.key.sub=value (one stage), key.sub=value "
                          "(every stage's recipe)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate every stage and print the plan; run nothing")
    data = sub.add_parser("data", help="synth | check", description="Dataset tools.").add_subparsers(
        dest="data_command", required=True, prog="tubelet data", metavar="synth|check")
    text = ("Write the synthetic action dataset (real H.264 MP4s, HMDB51 layout); the defaults "
            "are the quickstart's (configs/quickstart.yaml).")
    synth = data.add_parser("synth", help=text, description=text)
    synth.add_argument("root", type=Path, metavar="DIR",
                       help="where to write it (one made with the same parameters is kept)")
    synth.add_argument("--layout", default=None, metavar="NAME",
                       help="write a seed dataset's real layout and container instead: hmdb51, "
                            "ucf101, kinetics, ssv2, gaze360, ava-features or multilabel "
                            "(docs/datasets.md)")
    for flag, default, what in (("--num-classes", 8, "motion classes"),
                                ("--num-train-per-class", 80, "train clips per class"),
                                ("--num-test-per-class", 20, "test clips per class"),
                                ("--size", 40, "frame height and width in pixels"),
                                ("--seed", 0, "the generator's seed")):
        synth.add_argument(flag, type=int, default=default, metavar="N",
                           help=f"{what} (default: %(default)s)")
    text = ("Curves of loss, lr and every val/test metric of one or more runs, overlaid (a PNG), "
            "and a markdown table of their best metrics, time, speed and model size (stdout). "
            "Works on a run that is still going.")
    rep = sub.add_parser("report", help=text, description=text)
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories")
    rep.add_argument("--out", type=Path, default=Path("report.png"), metavar="PNG",
                     help="where to write the curves (default: %(default)s)")
    text = ("MAE/VideoMAE reconstructions of a pretraining run's last checkpoint: a PNG per clip "
            "with the original frames, the masked input and the reconstruction.")
    vis = sub.add_parser("visualize", help=text, description=text)
    vis.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the pretraining run directory")
    vis.add_argument("videos", type=Path, nargs="*", metavar="VIDEO",
                     help="videos to show (default: the first clips of data.val, else data.train)")
    vis.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="where to write the PNGs (default: RUN_DIR/visualize)")
    vis.add_argument("--num-clips", type=int, default=4, metavar="N",
                     help="clips of the recipe's data when no VIDEO is given (default: %(default)s)")
    text = "Per-class counts, missing or corrupt files and decode speed of a recipe's data."
    check = data.add_parser("check", help=text, description=text)
    _recipe_arguments(check)
    check.add_argument("--items", type=int, default=16, metavar="N",
                       help="items to time per split (default: %(default)s)")
    check.add_argument("--verify", type=int, default=0, metavar="N",
                       help="compare N seeded files' fast decode with a full sequential decode "
                            "(default: %(default)s)")
    return p


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    text = ("Top-k classes of videos as JSON lines (stdout or --out), with the checkpoint's own "
            "class names and eval preprocessing. INPUT: video files, folders (recursive), a "
            "video_list .txt, a Kinetics .csv or an SSv2 .json. Exit 4 when some videos could "
            "not be read (one row with \"error\" each).")
    p = sub.add_parser("predict", help=text, description=text)
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT|RUN_DIR",
                   help="a checkpoint file, a run directory or a .safetensors export")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="videos, folders or lists")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per row (default: 5)")
    p.add_argument("--views", metavar="TxS", help="temporal views x spatial crops per video "
                   "(default: the recipe's data.val)")
    p.add_argument("--window", type=float, metavar="S", help="also predict windows of S seconds")
    p.add_argument("--stride", type=float, metavar="S", help="seconds between windows "
                   "(default: --window)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the rows here, not stdout")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="clips per forward "
                   "(default: 8)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="decoding processes (default: 2; 0 decodes in this process)")
    p.add_argument("--root", type=Path, metavar="DIR", help="where a .csv/.json list's videos "
                   "are (default: the list's folder)")


def _predict(args: argparse.Namespace) -> int:
    from tubelet.predict import predict
    kwargs = dict(top_k=args.top_k, views=args.views, window_s=args.window, stride_s=args.stride,
                  batch_size=args.batch_size, device=args.device, num_workers=args.workers,
                  root=args.root)
    if args.out is None:
        return predict(args.checkpoint, args.inputs, out=sys.stdout, **kwargs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as out:
        return predict(args.checkpoint, args.inputs, out=out, **kwargs)


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, metavar="RECIPE.yaml", help="the recipe")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value",
                        help="overrides; the value is read as YAML (optimizer.lr=1e-3)")


def _run(args: argparse.Namespace) -> int:
    if args.command == "export":
        from tubelet.export import export
        print(f"wrote {export(args.checkpoint, args.out, encoder=args.encoder)}")
        return 0
    if args.command == "run":  # each stage is one of the commands here, run as a child
        from tubelet.experiment import run_experiment
        return run_experiment(args.experiment, args.overrides, dry_run=args.dry_run,
                              commands=tuple(c for c in COMMANDS if c != "config"))
    if args.command == "predict":
        return _predict(args)
    if args.command == "report":  # no torch: it reads the run dirs' files only
        from tubelet.report import report
        print(report(args.run_dirs, out=args.out))
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    if args.command == "visualize":
        from tubelet.loggers import setup_text_log
        from tubelet.visualize import visualize
        setup_text_log(None)
        for path in visualize(args.run_dir, args.videos, out=args.out, num_clips=args.num_clips):
            print(f"wrote {path}")
        return 0
    if args.command == "data" and args.data_command == "check":
        return _data_check(args)
    if args.command == "data" and args.layout is not None:
        from tubelet.data.synth_layouts import ensure_layout
        root = ensure_layout(args.root, layout=args.layout, num_classes=args.num_classes,
                             num_train_per_class=args.num_train_per_class,
                             num_test_per_class=args.num_test_per_class, size=args.size,
                             seed=args.seed)
        print(f"synthetic {args.layout} dataset ready at {root}")
        return 0
    if args.command == "data":
        from tubelet.data.synth import ensure_synthetic_dataset
        root = ensure_synthetic_dataset(args.root, num_classes=args.num_classes,
                                        num_train_per_class=args.num_train_per_class,
                                        num_test_per_class=args.num_test_per_class,
                                        size=args.size, seed=args.seed)
        print(f"synthetic dataset ready at {root}")
        return 0

    from tubelet.config import dump_config, load_config
    cfg = load_config(args.recipe, args.overrides)  # no torch yet: typos fail fast
    if args.command == "eval" and cfg.get("checkpoint") is None:
        _usage_error("eval", "checkpoint=PATH is required (a checkpoint file, a run directory "
                     "or a .safetensors export)")
    _check_early(cfg, train_data=args.command not in ("eval", "test"))
    if args.command in ("train", "test"):  # a bad or busy run dir, too
        from tubelet.rundir import check_free  # noqa: PLC0415
        check_free(cfg["run"])
    from tubelet import build  # noqa: PLC0415 - heavy: torch, models, datasets
    if args.command == "config":  # what train refuses before its run dir, config refuses too
        build.dry_forward(cfg, build.validate_config(cfg))
        sys.stdout.write(dump_config(cfg))
        return 0
    from tubelet import distributed as dist  # noqa: PLC0415
    from tubelet.engine.guard import NonFiniteError, Preempted  # noqa: PLC0415
    try:
        if args.command == "eval":  # a collective: every rank computes, rank 0 prints
            metrics = build.evaluate_checkpoint(cfg)
            if dist.is_main():  # one JSON document on stdout, as `test` prints, for a script
                print(json.dumps(metrics, indent=2))
            return 0
        if args.command == "test":
            from tubelet.build_testing import run_test  # noqa: PLC0415
            metrics = run_test(cfg)
            if dist.is_main():
                print(json.dumps(metrics, indent=2))
            return 0
        build.build_trainer(cfg).fit()
        return 0
    except Preempted as e:  # every rank says so: a scheduler's log shows each one left cleanly
        print(f"{_rank_prefix(dist)}{e}", file=sys.stderr)
        return e.exit_code  # 75, or 130 after Ctrl-C
    except NonFiniteError as e:
        print(f"error: {_rank_prefix(dist)}{e}", file=sys.stderr)
        return EXIT_NONFINITE
    finally:
        _release_and_shutdown(dist)


def _release_and_shutdown(dist) -> None:  # noqa: ANN001 - the tubelet.distributed module
    """Destroy the process group only after the trainer is gone. An error on its way to
    main() (a user error found in fit, e.g. too many bad files) keeps the trainer alive through
    its traceback; DDP's reducer holds the gloo group, and destroying that group after
    destroy_process_group, once a peer has exited, hung in ~ProcessGroupGloo (seen 1 in 7 tries).
    Clearing the finished frames' locals (the message and line numbers stay) frees it now."""
    import gc
    import traceback
    exc = sys.exc_info()[1]
    if exc is not None and dist.is_initialized():
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
    dist.shutdown()


def _check_early(cfg: dict, *, train_data: bool = True) -> None:
    """Full validation against the cached schema of the registries, before torch is imported,
    so a bad value is answered at once; skipped when there is no cache yet or the recipe
    imports plugins (`build.validate_config` validates in every case)."""
    from tubelet import validate, validate_schema  # noqa: PLC0415
    schema = None if cfg.get("imports") else validate_schema.cached_schema()
    if schema is not None:
        validate.check_recipe(cfg, schema, train_data=train_data)


def _data_check(args: argparse.Namespace) -> int:
    from tubelet.config import load_config
    cfg = load_config(args.recipe, args.overrides)
    _check_early(cfg)
    from tubelet import build  # noqa: PLC0415
    from tubelet.data.check import report  # noqa: PLC0415
    build.validate_config(cfg)
    num_bad = 0
    for split in ("train", "val"):
        node = (cfg.get("data") or {}).get(split)
        if node:
            dataset, _ = build.build_dataset(node, key=f"data.{split}")
            num_bad += report(dataset, name=f"data.{split}", num_items=args.items,
                              verify_files=args.verify)
    if num_bad:
        raise ConfigError(f"data: {num_bad} missing or corrupt files (listed above)")
    return 0


def _usage_error(command: str, message: str) -> None:
    """Missing arguments: that command's usage line, then the error; exit 2 (as argparse)."""
    _parser()._subparsers._group_actions[0].choices[command].error(message)


def _rank_prefix(dist) -> str:  # noqa: ANN001 - the tubelet.distributed module
    return f"rank {dist.get_rank()}: " if dist.get_world_size() > 1 else ""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tubelet import rundir  # noqa: PLC0415 - light: no torch
    try:
        return _run(args)
    except ConfigError as e:
        from tubelet.redact import redact_text  # noqa: PLC0415 - a scheduler keeps stderr too
        print(f"error: {redact_text(str(e))}", file=sys.stderr)
        rundir.finish_all(str(e))  # into the run's log.txt; a run that did nothing leaves no dir
        return EXIT_USER_ERROR
    except OSError as e:
        if not rundir.is_no_space(e):
            raise
        # a full disk outside a checkpoint write (log, metrics, export): one line too
        error = rundir.NoSpaceError(e.filename or "a file")
        print(f"error: {error}", file=sys.stderr)
        rundir.finish_all(str(error))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # outside training, or a second Ctrl-C: nothing was saved
        print("\ninterrupted (no checkpoint saved)", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    """The `tubelet` command and `python -m tubelet.cli`: main(), then the exit. A rank of a
    process group ends through tubelet.distributed.exit_process, which skips finalization."""
    try:
        code = main()
    except Exception:
        if not _joined_group():
            raise
        sys.excepthook(*sys.exc_info())  # what an uncaught error prints; it exits 1
        code = 1
    if _joined_group():
        sys.modules["tubelet.distributed"].exit_process(code)
    sys.exit(code)


def _joined_group() -> bool:
    dist = sys.modules.get("tubelet.distributed")  # not imported: no torch, no group
    return dist is not None and dist.joined()


if __name__ == "__main__":
    entry()
