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

USAGE = """\
tubelet train RECIPE.yaml [key.sub=value ...]     train (resume with resume=auto)
tubelet eval RECIPE.yaml checkpoint=PATH [...]     evaluate a checkpoint on data.val
tubelet config RECIPE.yaml [key.sub=value ...]    print the resolved, validated recipe
tubelet data synth DIR [--num-classes N ...]      write the synthetic action dataset
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tubelet", usage=USAGE)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("train", "eval", "config"):
        s = sub.add_parser(name)
        s.add_argument("recipe", type=Path)
        s.add_argument("overrides", nargs="*", help="dotted.key=value, value read as YAML")
    data = sub.add_parser("data").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the synthetic action dataset (HMDB51 layout)")
    synth.add_argument("root", type=Path)
    synth.add_argument("--num-classes", type=int, default=8)
    synth.add_argument("--num-train-per-class", type=int, default=40)
    synth.add_argument("--num-test-per-class", type=int, default=10)
    synth.add_argument("--size", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    return p


def _run(args: argparse.Namespace) -> int:
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
    from tubelet import build  # noqa: PLC0415 - heavy: torch, models, datasets
    if args.command == "config":
        build.validate_config(cfg)
        sys.stdout.write(dump_config(cfg))
        return 0
    if args.command == "eval":
        print(json.dumps(build.evaluate_checkpoint(cfg), indent=2))
        return 0
    trainer = build.build_trainer(cfg)
    trainer.fit()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
