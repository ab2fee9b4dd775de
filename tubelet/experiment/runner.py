"""Running an experiment's unfinished stages in order, each as a child process of this runner,
with stop signals forwarded and experiment.json kept up to date."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tubelet.experiment.stages import Stage, check_experiment, load_experiment
from tubelet.experiment.state import final_metrics, finished
from tubelet.redact import redact_argv
from tubelet.rundir import write_atomic

EXIT_PREEMPTED, EXIT_INTERRUPTED = 75, 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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
