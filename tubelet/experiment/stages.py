"""Reading and checking an experiment (`tubelet run`, see the package docstring): the file's
stages, each recipe loaded with its overrides, and every stage validated as `tubelet config`
would before the first one starts."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tubelet.config import SECTIONS, _read_yaml, load_config, parse_override
from tubelet.registry import ConfigError, did_you_mean, value_kind
from tubelet import rundir
from tubelet.rundir import check_free

EXPERIMENT_KEYS = ("name", "dir", "stages")
STAGE_KEYS = ("recipe", "command", "overrides", "run_dir")
# keys whose value may name an earlier stage's output, which does not exist before it runs
OUTPUT_KEYS = ("model.pretrained", "checkpoint", "resume")


@dataclass
class Stage:
    name: str
    command: str
    recipe: Path
    overrides: list[str]  # `key=value`, exactly what the child gets after the recipe
    run_dir: Path
    cfg: dict[str, Any] = field(default_factory=dict)  # the resolved recipe
    # what `finished` needs of a train stage's recipe (`read_plan` fills them from `cfg`)
    epochs: int = 1  # train.epochs
    patience: int | None = None  # train.early_stop.patience; None: no early stopping
    has_test: bool = False  # data.test: fit ends with the test stage

    def read_plan(self) -> None:
        """The plan fields from the loaded recipe `cfg`."""
        train = self.cfg.get("train") or {}
        self.epochs = train.get("epochs", 1)
        early = train.get("early_stop")
        self.patience = None if early is None else early["patience"]
        self.has_test = bool((self.cfg.get("data") or {}).get("test"))

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "tubelet.cli", self.command, str(self.recipe),
                *self.overrides]

    @property
    def result_file(self) -> Path:
        """Where a command other than train leaves its metrics (`eval_results.json`, ...)."""
        return self.run_dir / f"{self.command}_results.json"


# ------------------------------------------------------------------------------ reading
def load_experiment(path: str | Path, overrides: list[str] = (), *,
                    commands: tuple[str, ...]) -> tuple[Path, list[Stage]]:
    """The experiment's directory and its stages, each recipe loaded with its overrides (no
    validation against the registries yet: `check_experiment`). Command-line overrides:
    `dir=`/`name=` set the experiment's own keys, `stages.NAME.KEY=VALUE` one stage's recipe
    key (or its recipe/command/run_dir), any other `KEY=VALUE` every stage's recipe."""
    path = Path(path)
    doc = _read_yaml(path)
    for key in doc:
        if key not in EXPERIMENT_KEYS:
            raise ConfigError(f"{key}: unknown key{did_you_mean(key, EXPERIMENT_KEYS)} (an "
                              "experiment has name, dir and stages)")
    stages = doc.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"stages: expected a mapping of stage names to stages, got "
                          f"{value_kind(stages)}")
    doc.setdefault("name", path.stem)
    doc.setdefault("dir", "runs/${name}")
    common = _apply_overrides(doc, overrides)
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            raise ConfigError(f"stages.{name}: expected a mapping with recipe (and overrides, "
                              f"command, run_dir), got {value_kind(stage)}")
        for key in stage:
            if key not in STAGE_KEYS:
                raise ConfigError(f"stages.{name}.{key}: unknown key"
                                  f"{did_you_mean(str(key), STAGE_KEYS)}")
        stage.setdefault("run_dir", "${dir}/" + str(name))
        stage.setdefault("command", "train")
        stage["overrides"] = stage.get("overrides") or {}
        if not isinstance(stage["overrides"], dict):
            raise ConfigError(f"stages.{name}.overrides: expected a mapping of dotted.key: "
                              f"value, got {value_kind(stage['overrides'])}")
    try:  # ${stages.pretrain.run_dir}, ${dir}: OmegaConf, as in recipes
        resolved = OmegaConf.to_container(OmegaConf.create(doc), resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "experiment"
        raise ConfigError(f"{key}: {str(e).strip().splitlines()[0]}") from None
    out = [_stage(name, node, path, common, commands)
           for name, node in resolved["stages"].items()]
    return Path(str(resolved["dir"])), out


def _apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Command-line overrides into the experiment document; returns those for every stage."""
    common: dict[str, Any] = {}
    for text in overrides:
        key, value = parse_override(text)
        first, _, rest = key.partition(".")
        if first in ("name", "dir") and not rest:
            doc[first] = value
        elif first == "stages":
            name, _, sub = rest.partition(".")
            if name not in doc["stages"] or not sub:
                raise ConfigError(f"{key}: no stage {name!r}"
                                  f"{did_you_mean(name, list(doc['stages']))} (stages."
                                  "NAME.key=value sets a recipe key of one stage)")
            stage = doc["stages"][name]
            if sub in STAGE_KEYS and sub != "overrides":
                stage[sub] = value
            else:
                stage.setdefault("overrides", {})
                stage["overrides"] = {**(stage["overrides"] or {}), sub: value}
        elif first not in SECTIONS:
            raise ConfigError(f"{key}: unknown key{did_you_mean(first, (*EXPERIMENT_KEYS, *SECTIONS))}"
                              " (name, dir, stages.NAME.key, or a recipe key for every stage)")
        else:
            common[key] = value
    return common


def _stage(name: str, node: dict[str, Any], path: Path, common: dict[str, Any],
           commands: tuple[str, ...]) -> Stage:
    where = f"stages.{name}"
    command, recipe = node["command"], node.get("recipe")
    if command not in commands:
        raise ConfigError(f"{where}.command: unknown {command!r}; choose one of "
                          f"{', '.join(commands)}{did_you_mean(str(command), commands)}")
    if not isinstance(recipe, str) or not recipe:
        raise ConfigError(f"{where}.recipe: expected a recipe path, got {value_kind(recipe)}")
    run_dir = node["run_dir"]
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(f"{where}.run_dir: expected a path, got {value_kind(run_dir)}")
    values = {**node["overrides"], **common}
    for key in values:
        if key == "run" or key.startswith("run."):
            raise ConfigError(f"{where}.overrides.{key}: a stage's run dir is stages.{name}."
                              "run_dir (default: the experiment's dir/<stage name>)")
        if key == "resume" and command == "train":
            raise ConfigError(f"{where}.overrides.resume: tubelet run resumes every train "
                              "stage itself (resume=auto)")
    overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]  # JSON is YAML: read back exactly
    overrides.append(f"run.dir={json.dumps(run_dir)}")
    if command == "train":
        overrides.append("resume=auto")
    # a recipe path is relative to the experiment file, as a `base:` is to its recipe
    return Stage(name=str(name), command=command,
                 recipe=Path(os.path.normpath(path.parent / recipe)),
                 overrides=overrides, run_dir=Path(run_dir))


# ------------------------------------------------------------------------------ checking
def check_experiment(stages: list[Stage], *, check_paths: bool = True) -> None:
    """Every stage's recipe and overrides through `tubelet config`'s validation, before
    anything runs: a typo in the last stage exits 2 before the first starts. A value that
    names an earlier stage's output (OUTPUT_KEYS) is checked when that stage has run."""
    seen: dict[Path, str] = {}
    for i, stage in enumerate(stages):
        where = f"stages.{stage.name}"
        try:
            stage.cfg = load_config(stage.recipe, stage.overrides)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        earlier = {s.run_dir.absolute(): s.name for s in stages[:i]}
        later = {s.run_dir.absolute(): s.name for s in stages[i:]
                 if s.run_dir.absolute() not in earlier}
        cfg = dict(stage.cfg, model=dict(stage.cfg["model"]))
        for key in OUTPUT_KEYS:
            section, _, sub = key.rpartition(".")
            node = cfg[section] if section else cfg
            value = node.get(sub)
            if not isinstance(value, str):
                continue
            if _under(value, later):
                raise ConfigError(f"{where}: {key} names the run dir of stage "
                                  f"{_under(value, later)!r}, which does not run before it")
            if _under(value, earlier) and sub != "resume":
                node.pop(sub)  # its output does not exist yet; the stage checks it at start
        train = stage.command == "train"
        try:
            _validate(cfg, check_paths=check_paths, train_data=train)
            if train and check_paths:
                check_free(cfg["run"])  # a usable run dir, not held by a running process
                rundir._CHECKED.clear()  # the CLI's error goes to no stage's log.txt
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        stage.read_plan()  # validated: train.early_stop has its patience
        if train and stage.run_dir.absolute() in seen:
            raise ConfigError(f"{where}.run_dir: {stage.run_dir} is also the run dir of stage "
                              f"{seen[stage.run_dir.absolute()]!r}")
        seen[stage.run_dir.absolute()] = stage.name


def _under(value: str, dirs: dict[Path, str]) -> str | None:
    p = Path(value).absolute()
    return next((name for d, name in dirs.items() if p == d or d in p.parents), None)


def _validate(cfg: dict[str, Any], *, check_paths: bool, train_data: bool) -> None:
    """What `tubelet config` runs: the cached schema when there is one, else the registries."""
    from tubelet import validate, validate_schema  # noqa: PLC0415
    schema = None if cfg.get("imports") else validate_schema.cached_schema()
    if schema is not None:
        validate.check_recipe(cfg, schema, check_paths=check_paths, train_data=train_data)
        return
    from tubelet import build  # noqa: PLC0415 - heavy: torch
    build.validate_config(cfg, check_paths=check_paths, train_data=train_data)
