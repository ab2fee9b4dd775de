"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow (docs/trackers.md).

A recipe names them under `trackers:`, a mapping from tracker to its options (or a plain
list of names for the defaults):

    trackers:
      wandb: {project: my-project, mode: offline}   # online | offline (files in the run dir)
      mlflow: {experiment: my-experiment}             # tracking_uri: $MLFLOW_TRACKING_URI, else
                                                      # a file store in <run dir>/mlruns

Each tracker gets the resolved recipe as flattened, redacted params, the scalar metrics with
the same keys and steps as metrics.jsonl, and the pictures of `RunLogger.log_image`. Its run id
is kept in `<run dir>/trackers.json`, so `resume: auto` continues the same tracker run.

Only rank 0 talks to trackers (RunLogger is disabled elsewhere), and never on the training
thread: each tracker has a worker thread with a queue, so a slow or failing network never stalls
a step. A failure is reported once per tracker and training carries on; metrics.jsonl stays the
complete record. The packages are optional extras, imported only when a run starts a tracker.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tubelet.redact import redact_config, redact_text
from tubelet.registry import ConfigError, did_you_mean, value_kind
from tubelet.rundir import write_atomic

log = logging.getLogger("tubelet")
RECORD = "trackers.json"
# name -> {option: (accepted types, default)}; `None` in the types means null is allowed
OPTIONS: dict[str, dict[str, tuple[tuple, Any]]] = {
    "wandb": {"project": ((str,), "tubelet"), "entity": ((str, None), None),
              "mode": ((str, None), None), "name": ((str, None), None),
              "group": ((str, None), None), "tags": ((list, None), None)},
    "mlflow": {"tracking_uri": ((str, None), None), "experiment": ((str,), "tubelet"),
               "run_name": ((str, None), None)},
}
WANDB_MODES = ("online", "offline")
# the package each tracker imports and the extra that installs it
PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
INIT_TIMEOUT_S = 600.0  # W&B: how long its service may take to start a run
CLOSE_TIMEOUT_S = 300.0  # the end of a run waits this long at most for starts and uploads
MAX_QUEUE = 10_000  # rows held for a tracker that is slower than training; more are dropped


def normalize(node: Any) -> dict[str, dict[str, Any]]:
    """`trackers:` as {name: options with defaults filled}; raises ConfigError (dotted key,
    did-you-mean) on an unknown tracker or option, a bad value, or a package not installed."""
    if node is None:
        return {}
    if isinstance(node, list):
        for i, name in enumerate(node):
            if not isinstance(name, str):
                raise ConfigError(f"trackers[{i}]: expected a tracker name, got "
                                  f"{value_kind(name)}")
        node = {name: None for name in node}
    if not isinstance(node, dict):
        raise ConfigError(f"trackers: expected a mapping or a list of names, got "
                          f"{value_kind(node)}")
    out = {}
    for name, opts in node.items():
        key = f"trackers.{name}"
        if name not in OPTIONS:
            raise ConfigError(f"{key}: unknown tracker{did_you_mean(str(name), OPTIONS)}")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            raise ConfigError(f"{key}: expected a mapping of options, got {value_kind(opts)}")
        spec = OPTIONS[name]
        for k, v in opts.items():
            if k not in spec:
                raise ConfigError(f"{key}.{k}: unknown key{did_you_mean(str(k), spec)}")
            types = spec[k][0]
            if not (v is None and None in types or isinstance(v, tuple(t for t in types if t))):
                raise ConfigError(f"{key}.{k}: expected {' or '.join(_kind(t) for t in types)}, "
                                  f"got {value_kind(v)}")
        full = {k: opts.get(k, default) for k, (_, default) in spec.items()}
        _check_values(name, full, key)
        out[name] = full
    return out


def _kind(t: type | None) -> str:
    return {str: "a string", list: "a list", None: "null"}[t]


def _check_values(name: str, opts: dict[str, Any], key: str) -> None:
    if name == "wandb":
        if opts["mode"] is not None and opts["mode"] not in WANDB_MODES:
            raise ConfigError(f"{key}.mode: unknown {opts['mode']!r}; choose one of "
                              f"{list(WANDB_MODES)}{did_you_mean(opts['mode'], WANDB_MODES)}")
        if opts["tags"] is not None and not all(isinstance(t, str) for t in opts["tags"]):
            raise ConfigError(f"{key}.tags: expected a list of strings")
    package, extra = PACKAGES[name]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{key}: the {package} package is not installed; "
                          f"pip install 'tubelet[{extra}]'")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A recipe as {dotted.key: text}: lists by index, scalars as YAML-ish text."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        return {prefix: text}
    out = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if not out and prefix:  # an empty mapping or list is a value too
        out[prefix] = json.dumps(value)
    return out


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------------------- the trackers
class _Wandb:
    """One W&B run. `mode: offline` writes `<run dir>/wandb/offline-run-*` (`wandb sync` them
    in order); online it also keeps its local files there."""

    def __init__(self, *, run_dir: Path, run_name: str, params: dict[str, str],
                 project: str, entity: str | None, mode: str | None, name: str | None,
                 group: str | None, tags: list[str] | None) -> None:
        self.run_dir, self.params, self.run = run_dir, params, None
        # W&B writes these into its files: redacted like every other recipe value
        self.kwargs = redact_config(dict(project=project, entity=entity, mode=mode,
                                         name=name or run_name, group=group, tags=tags))
        self.first_step = 0

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        import wandb  # noqa: PLC0415 - an optional extra, slow to import
        # console off: log.txt is the log (and is redacted); meta off: env.json is the
        # environment record (also redacted), W&B's own copy would hold the raw command line
        # init_timeout: this runs on the tracker's thread, never holding a step back, and W&B's
        # 90 s default was too short for its service to start on a loaded machine
        settings = wandb.Settings(console="off", save_code=False, disable_git=True,
                                  x_disable_meta=True, init_timeout=INIT_TIMEOUT_S)
        run_id = previous.get("id") if previous else None
        # Our own W&B service, not one inherited from a parent process (WANDB_SERVICE: a
        # notebook, a test runner): a shared service outlives a SIGKILLed run and keeps its
        # run id "in use", so the resumed run could not continue it (seen in the tests).
        os.environ.pop("WANDB_SERVICE", None)
        self.run = wandb.init(dir=str(self.run_dir), config=self.params, id=run_id,
                              resume="allow" if run_id else None, settings=settings,
                              reinit="create_new", **self.kwargs)
        # online, a resumed run starts after the steps the server holds; W&B refuses lower ones
        self.first_step = int(self.run.step or 0) if run_id else 0
        return {"id": self.run.id, "mode": self.kwargs["mode"] or "online",
                "project": self.kwargs["project"]}

    def log(self, metrics: dict[str, float], step: int) -> None:
        if step >= self.first_step and metrics:
            self.run.log(metrics, step=step)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        import wandb  # noqa: PLC0415
        if step >= self.first_step:
            self.run.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    """One MLflow run. The tracking URI: the recipe's, else $MLFLOW_TRACKING_URI, else a file
    store in `<run dir>/mlruns` (`mlflow ui --backend-store-uri <run dir>/mlruns`)."""

    def __init__(self, *, run_dir: Path, run_name: str, params: dict[str, str],
                 tracking_uri: str | None, experiment: str, run_name_opt: str | None = None
                 ) -> None:
        self.run_dir, self.params = run_dir, params
        self.experiment = redact_text(experiment)
        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            (Path(run_dir).resolve() / "mlruns").as_uri()
        self.run_name = redact_text(run_name_opt or run_name)  # the URI stays: it connects
        self.client = self.run_id = None
        self.done: dict[str, int] = {}  # key -> the last step the store already holds

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        if self.uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked:
            # it needs no database packages, which is why it is the default here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import RunStatus  # noqa: PLC0415 - an optional extra
        from mlflow.tracking import MlflowClient  # noqa: PLC0415
        self.client = MlflowClient(tracking_uri=self.uri)
        run = None
        if previous and previous.get("run_id"):
            try:
                run = self.client.get_run(previous["run_id"])
            except Exception as e:  # noqa: BLE001 - another store, a deleted run: a new one
                log.warning("trackers.mlflow: cannot continue run %s (%s); starting a new one",
                            previous["run_id"], redact_text(str(e).splitlines()[0]))
        if run is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
            run = self.client.create_run(exp_id, run_name=self.run_name,
                                         tags={"tubelet.run_dir": str(Path(self.run_dir).resolve())})
        else:
            self.client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            for key in run.data.metrics:  # what the killed run sent: not sent twice
                self.done[key] = max(m.step for m in self.client.get_metric_history(
                    run.info.run_id, key))
        self.run_id = run.info.run_id
        self._log_params(run.data.params)
        return {"run_id": self.run_id, "experiment": self.experiment,
                "tracking_uri": redact_text(self.uri)}

    def _log_params(self, existing: dict[str, str]) -> None:
        from mlflow.entities import Param  # noqa: PLC0415
        # MLflow params are write-once: a resumed run adds new keys, and says which changed
        params = {k[:250]: v[:6000] for k, v in self.params.items()}
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("trackers.mlflow: params are write-once; the run keeps the first "
                        "values of %s", ", ".join(changed[:5]))
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric  # noqa: PLC0415
        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, step) for k, v in metrics.items()
                if step > self.done.get(k, -1)]
        if rows:
            self.client.log_batch(self.run_id, metrics=rows)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        self.client.log_image(self.run_id, image, key=tag, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


# ---------------------------------------------------------------------------- off the step
class _Worker:
    """Runs one tracker's calls in order on its own thread. The first failure is logged once
    (with what to expect); later calls still run, so a network that comes back is used again,
    except after a failed start, which leaves the tracker off for the run."""

    def __init__(self, name: str, tracker: Any) -> None:
        self.name, self.tracker = name, tracker
        self.queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUE)
        self.started = self.warned = self.dropped = False
        self.thread = threading.Thread(target=self._loop, name=f"tubelet-{name}", daemon=True)
        self.thread.start()

    def submit(self, call: Callable[[], None], *, start: bool = False,
               block: bool = False) -> None:
        """Queue `call`. A full queue drops it, unless `block` (the end waits for room)."""
        try:
            self.queue.put((call, start), block=block)
        except queue.Full:
            if not self.dropped:
                self.dropped = True
                log.warning("trackers.%s: %d calls waiting; dropping rows until it catches up "
                            "(metrics.jsonl has every row)", self.name, MAX_QUEUE)

    def stop(self) -> None:
        self.queue.put((None, False))  # blocking: the end must not be dropped

    def _loop(self) -> None:
        while True:
            call, start = self.queue.get()
            if call is None:
                return
            try:
                if start or self.started:
                    call()
            except Exception as e:  # noqa: BLE001 - a tracker never stops training
                self._warn(e)

    def _warn(self, error: Exception) -> None:
        if self.warned:
            return
        self.warned = True
        text = redact_text(f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                           if str(error).strip() else type(error).__name__)
        log.warning("trackers.%s: %s (%s); training goes on and metrics.jsonl keeps every row; "
                    "later errors of this tracker are not shown", self.name,
                    "start failed, tracker off for this run" if not self.started
                    else "logging failed", text)


class TrackerGroup:
    """The recipe's trackers as one sink for RunLogger: start, log, log_image, close."""

    def __init__(self, trackers: dict[str, dict[str, Any]], *, run_dir: str | Path,
                 run_name: str, recipe: dict[str, Any], resume: str | None) -> None:
        self.options, self.run_dir = trackers, Path(run_dir)
        self.run_name, self.resume = run_name, resume
        self.params = flatten(redact_config(recipe))
        self.workers: list[_Worker] = []
        self._record_lock = threading.Lock()

    def start(self, *, step: int) -> None:
        """Start every tracker off the step; after a resume at `step`, continue the recorded
        tracker run and re-send the rows of metrics.jsonl (all up to `step`, RunLogger has
        repaired it) that the tracker lacks: a SIGKILLed process may not have sent, or its
        tracker not written, the last ones (W&B writes its offline file every 15 s)."""
        record = self._read_record()
        continuing = self.resume not in (None, "restart")
        rows = _read_rows(self.run_dir / "metrics.jsonl") if continuing and step else []
        for name, opts in self.options.items():
            kwargs = dict(run_dir=self.run_dir, run_name=self.run_name, params=self.params)
            if name == "wandb":
                tracker = _Wandb(**kwargs, **opts)
            else:
                tracker = _Mlflow(**kwargs, tracking_uri=opts["tracking_uri"],
                                  experiment=opts["experiment"], run_name_opt=opts["run_name"])
            worker = _Worker(name, tracker)
            previous = record.get(name) if continuing else None
            worker.submit(self._starter(worker, previous, rows), start=True)
            self.workers.append(worker)

    def _starter(self, worker: _Worker, previous: dict | None,
                 rows: list[dict[str, Any]]) -> Callable[[], None]:
        def start() -> None:
            entry = worker.tracker.start(previous)
            worker.started = True
            with self._record_lock:  # both trackers' threads write the one record
                record = self._read_record()
                record[worker.name] = entry
                write_atomic(self.run_dir / RECORD, (json.dumps(record, indent=2) + "\n").encode())
            run_id = entry.get("id", entry.get("run_id"))
            if previous and previous.get("id", previous.get("run_id")) == run_id:
                log.info("trackers.%s: continuing run %s", worker.name, run_id)
                for row in rows:  # each tracker skips the steps it holds already
                    worker.tracker.log(_numbers(row), row["step"])
        return start

    def _read_record(self) -> dict[str, Any]:
        try:
            record = json.loads((self.run_dir / RECORD).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        numbers = _numbers(metrics)
        for w in self.workers:
            w.submit(lambda t=w.tracker: t.log(numbers, step))

    def log_image(self, tag: str, image: Any, *, step: int) -> None:
        import numpy as np  # noqa: PLC0415
        image = np.array(image, dtype=np.uint8, copy=True)  # the caller may reuse its buffer
        for w in self.workers:
            w.submit(lambda t=w.tracker: t.log_image(tag, image, step))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.submit(w.tracker.close, block=True)
            w.stop()
        for w in self.workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
            if w.thread.is_alive():
                log.warning("trackers.%s: not finished after %.0f s; leaving it", w.name,
                            timeout)
        self.workers = []
