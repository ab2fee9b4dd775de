"""The docs are true: every fenced shell command and recipe fragment in README.md, CONTRIBUTING.md
and docs/*.md that is cheap enough is run, one test case each (`pytest -rs` lists what is
skipped and why).

- `tubelet config|--help|--version` commands run as written; `tubelet train|eval|test|data check`
  commands run as `tubelet config` with the same recipe and overrides (the recipe and every
  override are validated; the training itself is too long for a test), `tubelet run` as
  `tubelet run ... --dry-run` (every stage validated, none run). Overrides that name the
  output of an earlier documented run (`runs/...`) are dropped, and the case says so.
- `$ command` lines in plain blocks run as a real subprocess and must print the lines below them.
- A YAML fragment that is a recipe (`base:` or `imports:`) goes through `tubelet config`; any
  other fragment (a dataset node, a transform list, a model node) has each `{type: ...}` node
  checked against the registry its position names, as `tubelet config` would.
- `python benchmarks/X.py --flags` must name a script that accepts those flags (`--help`).
- A Python fragment headed `# path/to/module.py` must compile; it is written there (in a
  temporary directory on sys.path) for the fragments that import it.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_tubelet
from tubelet import cli

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = re.compile(r"^(RECIPE|recipe|DIR|PATH|CHECKPOINT|OUT)\b|\.\.\.|<|\$")
RECIPE_KEYS = {"base", "imports", "seed", "run", "resume", "checkpoint", "data", "model", "task",
               "optimizer", "schedule", "train", "hooks", "distributed"}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def fenced_blocks(doc: Path) -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(doc.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, start, body = line.strip()[3:].strip(), i, []
            else:
                blocks.append(Block(doc, start, lang, textwrap.dedent("\n".join(body))))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{doc}: unclosed fence at line {start}"
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    """Simple commands (token lists) of a shell block: continuations joined, comments dropped,
    split at `&&`, `;` and `|`."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        current: list[str] = []
        for token in lexer:
            if token in ("&&", ";", "|", "||", "&"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def tubelet_argv(tokens: list[str]) -> list[str] | None:
    """The tubelet arguments of a command, through `torchrun ... --no-python`, `srun`,
    `python -m tubelet.cli`; None when the command does not run tubelet."""
    for i, token in enumerate(tokens):
        if token == "tubelet":
            return tokens[i + 1:]
        if token == "tubelet.cli" and i and tokens[i - 1] == "-m":
            return tokens[i + 1:]
    return None


# ---------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    where: str
    kind: str  # tubelet | console | yaml | python | benchmark | other
    payload: object

    def __str__(self) -> str:
        return f"{self.where} {self.kind}"


def collect() -> list[Case]:
    cases = []
    for doc in DOCS:
        for block in fenced_blocks(doc):
            if block.lang in ("bash", "sh", "shell"):
                for tokens in shell_commands(block.text):
                    argv = tubelet_argv(tokens)
                    if argv is not None:
                        cases.append(Case(block.where, "tubelet", tuple(argv)))
                    elif tokens[0] == "python" and tokens[1:2] and tokens[1].startswith("benchmarks/"):
                        cases.append(Case(block.where, "benchmark", tuple(tokens[1:])))
                    else:
                        cases.append(Case(block.where, "other", tuple(tokens)))
            elif block.lang == "yaml":
                cases.append(Case(block.where, "yaml", block.text))
            elif block.lang == "python":
                cases.append(Case(block.where, "python", block.text))
            elif "\n$ " in "\n" + block.text:
                cases.append(Case(block.where, "console", block.text))
    return cases


CASES = collect()
OTHER_REASONS = {"pip": "installs packages (network)", "tensorboard": "a server",
                 "scontrol": "SLURM only", "exit": "shell control flow", "rc=$?": "shell",
                 "if": "shell control flow", "then": "shell control flow",
                 "fi": "shell control flow"}


def skip_other(tokens: tuple[str, ...]) -> None:
    if tokens[:3] == ("python", "-m", "pytest"):
        pytest.skip("the test suite itself")
    reason = OTHER_REASONS.get(tokens[0]) or OTHER_REASONS.get(tokens[0].split("=")[0] + "=$?")
    pytest.skip(reason or f"not a tubelet command: {' '.join(tokens)}")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The repo's configs copied beside the fragments, the docs' Python modules on sys.path,
    and the repo as the working directory (doc commands use repo-relative paths)."""
    import shutil
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for case in CASES:
        if case.kind == "python":
            path = module_path(case.payload)
            # a file shown inside the package (CONTRIBUTING's new dataset) would shadow the
            # real `tubelet` for every command run from the sandbox: compiled only
            if path and not path.startswith("tubelet/"):
                (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
                for parent in (tmp_path / path).parents:
                    if parent == tmp_path:
                        break
                    (parent / "__init__.py").touch()
                (tmp_path / path).write_text(case.payload)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(REPO)
    return tmp_path


def module_path(text: str) -> str | None:
    m = re.match(r"# (\S+\.py)\n", text)
    return m.group(1) if m else None


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def check_tubelet(argv: tuple[str, ...], capsys) -> None:
    if any(PLACEHOLDERS.search(a) for a in argv[1:2]) or "recipe.yaml" in argv:
        pytest.skip(f"a placeholder, not a command: tubelet {' '.join(argv)}")
    if argv[0] in ("export", "predict", "report", "visualize"):
        pytest.skip(f"{argv[0]} needs a trained run (its own tests run it)")
    dropped = [a for a in argv if "=runs/" in a or a.startswith("checkpoint=runs/")]
    args = [a for a in argv if a not in dropped]
    if args[0] == "run" and "--dry-run" not in args:  # every stage validated, none run
        args = [*args, "--dry-run"]
    if args[0] in ("train", "eval", "test") or args[:2] == ["data", "check"]:
        recipe_at = 2 if args[0] == "data" else 1
        args = ["config", *args[recipe_at:]]
    code, out, err = run_cli(args, capsys)
    if code == 2 and re.match(r"error: (stages\.\S+: )?data\.\S+: no such (file|directory)",
                              err.strip().splitlines()[-1]):
        # a paper recipe: everything up to its dataset's files, which are not shipped, checked
        pytest.skip(f"validated up to the dataset, not shipped here: {err.strip()}")
    assert code == 0, f"tubelet {' '.join(args)} exited {code}: {err.strip()[-500:]}"
    if args[0] == "config":
        assert yaml.safe_load(out)["model"], out  # the resolved recipe was printed
    if dropped:
        print(f"validated without {dropped}: they name the output of an earlier run")


def check_console(text: str, tmp_path) -> None:
    """`$ tubelet ...` then the lines it prints; only commands documented to fail fast run."""
    chunks = re.split(r"^\$ ", text, flags=re.M)[1:]
    for chunk in chunks:
        command, *expected = chunk.splitlines()
        argv = tubelet_argv(shlex.split(command))
        assert argv is not None, command
        assert expected and expected[0].startswith("error:"), "only failing commands are run"
        proc = run_tubelet(*[str(REPO / a) if a.endswith(".yaml") else a for a in argv],
                           cwd=tmp_path, check=False, timeout=60)
        assert proc.returncode == 2, proc.stderr
        got = proc.stderr.strip().splitlines()
        assert got[-len(expected):] == expected, got


def check_yaml(case: Case, sandbox: Path, capsys) -> None:
    text = case.payload
    node = yaml.safe_load(text)
    assert isinstance(node, dict), f"{case.where}: not a mapping"
    if "..." in text:
        pytest.skip("elided with '...'")
    if "base" in node or "imports" in node:  # a recipe: the whole of `tubelet config`
        name = re.match(r"# configs/(\S+\.yaml)", text)
        path = sandbox / "configs" / (name.group(1) if name else f"doc_{case.where.split(':')[1]}.yaml")
        if "base" not in node:  # the sections it leaves out, whole, from the quickstart
            quickstart = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
            text = yaml.safe_dump({k: v for k, v in quickstart.items() if k not in node}) + text
        path.write_text(text)
        code, out, err = run_cli(["config", str(path)], capsys)
        assert code == 0, err
        resolved = yaml.safe_load(out)
        if name:  # a recipe of its own runs under its own name, not its base's
            assert resolved["run"]["name"] == path.stem, resolved["run"]
        return
    check_typed_nodes(node)


def registry_for(path: tuple[str, ...]):
    from tubelet.models.heads import HEADS, NECKS
    from tubelet.registry import DATASETS, HOOKS, MODELS, OPTIMIZERS, TASKS, TRANSFORMS
    keys = [k for k in path if k != "[]"]
    last = keys[-1] if keys else ""
    table = {"model": MODELS, "backbone": MODELS, "neck": NECKS, "head": HEADS, "hooks": HOOKS,
             "task": TASKS, "optimizer": OPTIMIZERS, "transforms": TRANSFORMS,
             "device_transforms": TRANSFORMS, "train": DATASETS, "val": DATASETS, "test": DATASETS,
             "datasets": DATASETS, "dataset": DATASETS}
    return table[last]


def typed_nodes(node, path=()):
    if isinstance(node, dict):
        if "type" in node:
            yield path, node
        for k, v in node.items():
            yield from typed_nodes(v, (*path, k))
    elif isinstance(node, list):
        for v in node:
            yield from typed_nodes(v, (*path, "[]"))


def check_typed_nodes(fragment: dict) -> None:
    """Every `type` is registered where it stands and every key is accepted by its target.
    Required keys may be missing: a doc fragment shows the keys that matter to its point."""
    import inspect

    from tubelet.build import _register_builtins
    from tubelet.registry import check_kwargs
    _register_builtins(None)
    found = list(typed_nodes(fragment))
    assert found, "no {type: ...} node to check"
    for path, node in found:
        key = ".".join(path)
        target = registry_for(path).get(node["type"], key=f"{key}.type")
        params = inspect.signature(target).parameters
        keys = [k for k in node if k not in ("type", "transforms", "device_transforms")]
        check_kwargs(target, keys, key=key, runtime=params)


def check_benchmark(tokens: tuple[str, ...]) -> None:
    script = REPO / tokens[0]
    assert script.is_file(), tokens[0]
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    for flag in [t for t in tokens[1:] if t.startswith("--")]:
        assert flag in proc.stdout, f"{tokens[0]} has no {flag}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_doc_case(case, sandbox, capsys):
    try:
        check_case(case, sandbox, capsys)
    except pytest.skip.Exception as e:  # say which doc line is skipped, for `pytest -rs`
        pytest.skip(f"{case.where}: {e.msg}")


def check_case(case: Case, sandbox: Path, capsys) -> None:
    if case.kind == "tubelet":
        check_tubelet(case.payload, capsys)
    elif case.kind == "console":
        check_console(case.payload, sandbox)
    elif case.kind == "yaml":
        check_yaml(case, sandbox, capsys)
    elif case.kind == "python":
        compile(case.payload, case.where, "exec")
        if module_path(case.payload) is None:
            pytest.skip("an excerpt without a `# path.py` header; compiled only")
    elif case.kind == "benchmark":
        check_benchmark(case.payload)
    else:
        skip_other(case.payload)


def test_every_doc_has_its_blocks_found():
    """The parser sees the blocks that matter (a guard against a fence style it misses)."""
    kinds = {(Path(c.where.split(":")[0]).name, c.kind) for c in CASES}
    assert {("README.md", "tubelet"), ("README.md", "console"), ("recipes.md", "yaml"),
            ("recipes.md", "python"), ("distributed.md", "tubelet"), ("datasets.md", "yaml"),
            ("models.md", "yaml"), ("CONTRIBUTING.md", "benchmark")} <= kinds


def test_readme_links_stay_inside_the_repository():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{doc.name}: {target}"
