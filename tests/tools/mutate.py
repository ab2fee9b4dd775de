"""Random mutations of the shipped recipes, for the property test and for listing what
validation still accepts (`python -m tests.tools.mutate` prints the accepted ones)."""
from __future__ import annotations

import copy
import math
import random
import re
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
# configs/experiments/ holds `tubelet run` experiments, not recipes (tests/test_experiment.py)
RECIPES = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.relative_to(REPO / "configs").parts[0] != "experiments")
KINDS = ("delete", "misspell", "wrong_type", "negative", "huge", "nan", "null", "renest")


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a nested dict/list recipe (list items by index)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from paths(v, prefix + (k,))


def _parent(cfg: Any, path: tuple) -> Any:
    for k in path[:-1]:
        cfg = cfg[k]
    return cfg


def _misspell(name: str, rng: random.Random) -> str:
    """A typo: two letters swapped or one dropped, always a different name."""
    if len(name) >= 3:
        for _ in range(10):
            i = rng.randrange(len(name) - 1)
            typo = name[:i] + name[i + 1] + name[i] + name[i + 2:] if rng.random() < 0.5 \
                else name[:i] + name[i + 1:]
            if typo != name:
                return typo
    return name + "x"


def mutate(cfg: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    """One random mutation of a resolved recipe; returns it and a description."""
    cfg = copy.deepcopy(cfg)
    cfg.pop("run", None)  # a resolved run.dir would point every mutant at one run dir
    all_paths = [p for p in paths(cfg) if p[0] != "run"]
    path = rng.choice(all_paths)
    parent, key = _parent(cfg, path), path[-1]
    kind = rng.choice(KINDS)
    where = ".".join(map(str, path))
    old = parent[key]
    if kind == "delete" and isinstance(parent, dict):
        del parent[key]
    elif kind == "misspell" and isinstance(parent, dict) and isinstance(key, str):
        parent[_misspell(key, rng)] = parent.pop(key)
        return cfg, f"misspell {where}"
    elif kind == "wrong_type":
        parent[key] = rng.choice(["abc", [1, 2], {"a": 1}, True, 3.5, 7])
    elif kind == "negative":
        parent[key] = -abs(old) if isinstance(old, (int, float)) and not isinstance(old, bool) \
            and old != 0 else -1
    elif kind == "huge":
        parent[key] = rng.choice([10**12, 1e30, 2**63])
    elif kind == "nan":
        parent[key] = rng.choice([math.nan, math.inf, -math.inf])
    elif kind == "null":
        parent[key] = None
    elif kind == "renest" and isinstance(parent, dict):
        # wrong nesting: the key moves one level up (or into a sibling mapping)
        value = parent.pop(key)
        grand = _parent(cfg, path[:-1]) if len(path) > 1 else cfg
        target = grand if isinstance(grand, dict) else cfg
        siblings = [v for v in parent.values() if isinstance(v, dict)]
        if siblings and rng.random() < 0.5:
            target = rng.choice(siblings)
        target[key] = value
        return cfg, f"renest {where}"
    else:
        parent[key] = "abc"
        kind = "wrong_type"
    new = parent.get(key, "<deleted>") if isinstance(parent, dict) else parent[key]
    return cfg, f"{kind} {where}: {_short(old)} -> {_short(new)}"


# Why a mutation that `tubelet config` accepts is still a valid recipe (docs/recipes.md lists
# them). The property test fails on an accepted mutation that none of these explains.
JUSTIFIED = (
    (r"^(delete|null) ", "an optional key: the signature's default applies (a required key "
     "deleted or set to null is refused)"),
    (r"^(negative|huge|wrong_type) \S*transforms\.\d+\.(mean|std)\.\d+: \S+ -> [-\d.e+]+$",
     "normalize: any finite mean and any positive std are a valid normalization"),
    (r"^wrong_type \S+: [-\d.e+]+ -> (7|3\.5)$",
     "a number replaced by another in-range number (7, or 3.5 where a float is allowed): still "
     "a valid value, e.g. optimizer.lr: 7; the type and range checks still apply"),
    (r"^wrong_type \S*model\.in_features: \d+ -> \d+$",
     "a feature width is known only from the data file: the first step reports it"),
    (r"^wrong_type \S+: False -> True$",
     "a switch turned on (model.backbone.class_token: true): the other valid value of a bool"),
    (r"^wrong_type \S+: (True -> True|7 -> 7|3\.5 -> 3\.5)$",
     "the 'wrong' value drawn was the value already there: no mutation at all"),
)


def justify(what: str) -> str | None:
    for pattern, reason in JUSTIFIED:
        if re.search(pattern, what):
            return reason
    return None


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def stub_paths(cfg: dict[str, Any], root: Path, check) -> None:  # noqa: ANN001
    """Create the directories and files that a recipe names (its datasets are not shipped),
    empty, under `root` (the cwd), until `check(cfg)` raises no missing-path error."""
    for _ in range(20):
        try:
            check(cfg)
            return
        except Exception as e:  # noqa: BLE001 - the ConfigError text names the path
            m = re.search(r"no such (directory|file|file or directory) '([^']+)'", str(e))
            if not m:
                raise
            p = root / m.group(2)
            if m.group(1) == "directory":
                p.mkdir(parents=True, exist_ok=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.touch()
    raise AssertionError("too many missing paths")


def run_mutations(workdir: Path, *, per_recipe: int, seed: int = 0
                  ) -> list[tuple[str, str, int, str]]:
    """Each shipped recipe, `per_recipe` seeded mutations, through `tubelet config` in-process
    (run from `workdir`, where the recipes' data paths are stubbed). Returns
    (recipe, mutation, exit code, stderr) per mutation; anything but a ConfigError raises."""
    import contextlib
    import io
    import os
    import signal

    import yaml

    from tubelet.build import validate_config
    from tubelet.cli import main
    from tubelet.config import load_config

    def alarm(*_):  # noqa: ANN002
        raise TimeoutError("a mutation took more than 10 s")

    results = []
    old_cwd, old_handler = os.getcwd(), signal.signal(signal.SIGALRM, alarm)
    os.chdir(workdir)
    try:
        for n, recipe in enumerate(RECIPES):
            cfg = load_config(recipe)
            stub_paths(cfg, workdir, validate_config)
            rng = random.Random(f"{seed}-{recipe.relative_to(REPO)}")
            for i in range(per_recipe):
                mutant, what = mutate(cfg, rng)
                path = workdir / f"m{n}_{i}.yaml"
                path.write_text(yaml.safe_dump(mutant, sort_keys=False))
                err = io.StringIO()
                signal.alarm(10)
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    rc = main(["config", str(path)])
                signal.alarm(0)
                results.append((str(recipe.relative_to(REPO)), what, rc, err.getvalue()))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old_cwd)
    return results


if __name__ == "__main__":
    import sys
    import tempfile
    import time
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = run_mutations(Path(tmp), per_recipe=per)
        took = time.perf_counter() - t
    accepted = [(r, w) for r, w, rc, _ in out if rc == 0]
    for r, w in accepted:
        print(f"accepted  {r}  {w}  ({justify(w) or 'NOT JUSTIFIED'})")
    print(f"{len(out)} mutations, {len(accepted)} accepted, "
          f"{sum(rc == 2 for *_, rc, _ in out)} refused (exit 2), {took:.1f} s")
