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
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tubelet.config import SECTIONS, _read_yaml, load_config, parse_override
from tubelet.redact import redact_argv
from tubelet.registry import ConfigError, did_you_mean, value_kind
from tubelet import rundir
from tubelet.rundir import check_free, write_atomic

EXPERIMENT_KEYS = ("name", "dir", "stages")
STAGE_KEYS = ("recipe", "command", "overrides", "run_dir")
# keys whose value may name an earlier stage's output, which does not exist before it runs
OUTPUT_KEYS = ("model.pretrained", "checkpoint", "resume")
EXIT_PREEMPTED, EXIT_INTERRUPTED = 75, 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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


# ------------------------------------------------------------------------------ finished?
def finished(stage: Stage) -> bool:
    """What the stage's run dir says. train: the last checkpoint completed the schedule (its
    epoch is the recipe's train.epochs) or stopped early, and, when the recipe has a data.test
    that fit evaluates at its end, test_results.json is there. Other commands: their result
    file is there."""
    if stage.command != "train":
        return stage.result_file.is_file()
    state = _last_trainer_state(stage.run_dir)
    if state is None:
        return False
    from tubelet.engine.early_stop import stops  # noqa: PLC0415
    done = state["epoch"] >= stage.epochs or (
        stage.patience is not None and stops(state.get("early_stop"), patience=stage.patience))
    tested = not stage.has_test or (stage.run_dir / "test_results.json").is_file()
    return bool(done and tested)


def _last_trainer_state(run_dir: Path) -> dict[str, Any] | None:
    """The trainer counters of checkpoints/last.pt; memory-mapped, so a multi-GB checkpoint
    costs only its small pickle. None when there is none or it does not load (the stage's
    own resume=auto then falls back, as it does for any run)."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    import torch  # noqa: PLC0415
    try:
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file means "not finished"
        return None
    trainer = state.get("trainer") if isinstance(state, dict) else None
    return trainer if isinstance(trainer, dict) and "epoch" in trainer else None


def final_metrics(stage: Stage) -> dict[str, Any]:
    """train: the last value of every val/ and test/ key in metrics.jsonl, the step and epoch
    it ended at, the best value of train.best_metric and whether it stopped early; other
    commands: their result file."""
    if stage.command != "train":
        try:
            data = json.loads(stage.result_file.read_text())
        except (OSError, ValueError):
            return {}
        # test_results.json nests them beside the checkpoint it tested and its report files
        return data["metrics"] if isinstance(data.get("metrics"), dict) else data
    out: dict[str, Any] = {}
    try:
        lines = (stage.run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        out.update({k: v for k, v in row.items() if k.startswith(("val/", "test/"))})
    state = _last_trainer_state(stage.run_dir)
    if state is not None:
        out.update(step=state.get("step"), epoch=state.get("epoch"), best=state.get("best"))
        early = state.get("early_stop")
        out["stopped_early"] = (bool(early) and stage.patience is not None
                                and state["epoch"] < stage.epochs)
    return out


# ------------------------------------------------------------------------------ running
def run_experiment(path: str | Path, overrides: list[str] = (), *, commands: tuple[str, ...],
                   dry_run: bool = False) -> int:
    """Validate every stage, then run the unfinished ones in order. Returns the exit code:
    0 when every stage is finished, else the first failing stage's (75 preempted: run the
    same command again to continue)."""
    exp_dir, stages = load_experiment(path, list(overrides), commands=commands)
    check_experiment(stages)
    report = Report(exp_dir / "experiment.json", experiment=str(path), stages=stages,
                    enabled=_is_rank0())
    done = {s.name: finished(s) for s in stages}
    for stage in stages if _is_rank0() else ():
        print(f"stage {stage.name}: {'finished' if done[stage.name] else 'to run'}: "
              f"tubelet {' '.join(redact_argv(stage.argv[3:]))}", file=sys.stderr)
    if dry_run:
        return 0
    with _Forwarder() as forwarder:
        for stage in stages:
            if done[stage.name]:
                report.update(stage, status="done", metrics=final_metrics(stage))
                continue
            if forwarder.received:  # asked to stop between stages: nothing to save
                report.finish("preempted")
                return EXIT_PREEMPTED
            report.update(stage, status="running")
            start = time.monotonic()
            code = _run_stage(stage, forwarder)
            status = {0: "done", EXIT_PREEMPTED: "preempted",
                      EXIT_INTERRUPTED: "interrupted"}.get(code, "failed")
            report.update(stage, status=status, exit_code=code,
                          add_wall_s=time.monotonic() - start, metrics=final_metrics(stage))
            if code != 0:
                report.finish(status)
                print(f"stage {stage.name}: {status} (exit {code}); run the same tubelet run "
                      "command again to continue", file=sys.stderr)
                return code
    report.finish("done")
    return 0


def _run_stage(stage: Stage, forwarder: "_Forwarder") -> int:
    """The stage's command as a child of this process. train: its output passes through;
    other commands print their metrics as JSON, kept in the stage's result file."""
    env = {**os.environ, "TUBELET_STAGE": stage.name}  # scopes the rendezvous keys per stage
    capture = stage.command != "train"
    proc = subprocess.Popen(stage.argv, env=env, preexec_fn=_die_with_parent,
                            stdout=subprocess.PIPE if capture else None, text=capture)
    forwarder.child = proc
    try:
        out, _ = proc.communicate()
    finally:
        forwarder.child = None
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # as a shell says
    if capture:
        sys.stdout.write(out)
        sys.stdout.flush()
        if code == 0 and not stage.result_file.is_file() and _is_rank0():
            try:
                metrics = json.loads(out)
            except ValueError:
                metrics = None
            if isinstance(metrics, dict):
                stage.run_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(stage.result_file, (json.dumps(metrics, indent=2) + "\n").encode())
    return code


def _die_with_parent() -> None:
    """In the child: SIGTERM when this runner dies (even by SIGKILL), so a stage never trains
    on unattended; SIGTERM makes it save a checkpoint and exit 75 (engine/guard.py)."""
    PR_SET_PDEATHSIG = 1  # noqa: N806 - the <sys/prctl.h> name
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the stage outlives a killed runner
        pass


class _Forwarder:
    """While a stage runs, SIGTERM/SIGUSR1 sent to this runner go on to the stage (a second
    copy when the sender signalled the whole process group is harmless: the stage saves once).
    SIGINT is not forwarded: Ctrl-C reaches the whole foreground group already, and a second
    SIGINT would make the stage abort without saving. The runner itself waits for the stage's
    exit code in both cases."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        if signum != signal.SIGINT and self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def __enter__(self) -> "_Forwarder":
        for sig in (*STOP_SIGNALS, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _is_rank0() -> bool:
    """Under torchrun or srun every rank runs this runner (and its stages); one writes."""
    env = os.environ
    return env.get("RANK", env.get("SLURM_PROCID", "0")) == "0"


class Report:
    """experiment.json, rewritten atomically at every change of a stage. A stage's wall time
    adds up over the runs of `tubelet run` that saw it end (a runner killed mid-stage cannot
    record its share), and a skipped stage keeps its exit code: both are read back from the
    previous file, which decides nothing."""

    def __init__(self, path: Path, *, experiment: str, stages: list[Stage], enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        previous = {}
        try:
            previous = {s["name"]: s for s in json.loads(path.read_text())["stages"]}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.data: dict[str, Any] = {"experiment": experiment, "dir": str(path.parent),
                                     "status": "running", "stages": []}
        for s in stages:
            self.data["stages"].append({
                "name": s.name, "command": s.command, "recipe": str(s.recipe),
                "run_dir": str(s.run_dir), "status": "pending",
                "exit_code": (previous.get(s.name) or {}).get("exit_code"),
                "wall_s": float((previous.get(s.name) or {}).get("wall_s") or 0.0),
                "metrics": {}, "argv": ["tubelet", *redact_argv(s.argv[3:])]})

    def update(self, stage: Stage, *, add_wall_s: float = 0.0, **fields: Any) -> None:
        entry = next(e for e in self.data["stages"] if e["name"] == stage.name)
        entry.update(fields)
        entry["wall_s"] = round(entry["wall_s"] + add_wall_s, 3)
        self._write()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self._write()

    def _write(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(self.data, indent=2) + "\n").encode())
