"""The hostile or broken recipes of issue 10, written under a directory; shared by
tests/test_config.py and benchmarks/validation_latency.py."""
from __future__ import annotations

import os
from pathlib import Path

MINIMAL = ("model: {type: vit}\ntask: {type: classification, num_classes: 2}\n"
           "optimizer: {type: sgd, lr: 0.1}\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hostile_recipes(root: Path) -> dict[str, tuple[Path, str]]:
    """The hostile or broken recipes of issue 10: name -> (recipe, the expected error's end)."""
    level = '["x","x","x","x","x","x","x","x","x"]'
    bomb = [f"a0: &a0 {level}"] + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]"
                                   for i in range(1, 10)]
    out = {"alias_bomb": (write(root / "bomb.yaml", "\n".join(bomb) + "\n"),
                          "once YAML aliases are expanded; a recipe is a small document"),
           "dev_zero": (write(root / "zero.yaml", "base: /dev/zero\n"),
                        "/dev/zero: not a regular file (a FIFO, socket or device); expected a "
                        "recipe file"),
           "not_utf8": (write(root / "latin1.yaml", MINIMAL).with_name("latin1.yaml"),
                        "latin1.yaml:4: not UTF-8 (byte 0xe9); save the recipe as UTF-8"),
           "imports_null": (write(root / "imp.yaml", MINIMAL + "imports: [null]\n"),
                            "imports[0]: expected a module name, got null"),
           "deep_flow": (write(root / "deep.yaml", "x: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                         "deep.yaml:1: nested deeper than 64 levels"),
           "shadow": (write(root / "shadow.yaml", f"base: {root / 'secret'}\n"),
                      "secret:1: not a recipe (a top-level key is not a name)")}
    (root / "latin1.yaml").write_bytes(MINIMAL.encode() + "# caf\xe9\n".encode("latin-1"))
    write(root / "secret", "root:$6$s3cr3t:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n")
    os.mkfifo(root / "fifo")
    out["fifo"] = (write(root / "fifo.yaml", "base: fifo\n"),
                   "fifo: not a regular file (a FIFO, socket or device); expected a recipe file")
    with open(root / "big.yaml", "w") as f:  # 50 MB: one long flow list, written in chunks
        f.write("x: [")
        for _ in range(250):
            f.write("1," * 100_000)
        f.write("1]\n")
    out["list_50mb"] = (root / "big.yaml", "big.yaml: 50000007 bytes; a recipe may have at most "
                        "1048576 (1 MiB)")
    for i in range(1000):
        write(root / "chain" / f"c{i}.yaml", f"base: c{i + 1}.yaml\n")
    write(root / "chain" / "c1000.yaml", MINIMAL)
    out["base_chain_1000"] = (root / "chain" / "c0.yaml",
                              "c16.yaml: base: chain deeper than 16 recipes")
    return out
