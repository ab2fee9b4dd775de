"""DDP and FSDP2 against one process, two "nodes" on localhost, the config-hash check, and
exact eval over 2 ranks. Real torchrun launches with gloo on CPU, bounded by timeouts."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tubelet.build import build_model
from tubelet.config import load_config
from tubelet.data.synth import ensure_synthetic_dataset

from .conftest import (DDP_RECIPE, STEPS, ckpt, cli_cmd, env, free_port, max_param_diff, run,
                       torchrun_cmd, train_args)

pytestmark = pytest.mark.slow


def test_ddp_2x_batch_b_equals_one_process_batch_2b(tmp_path, tiny_data_root, ddp_reference):
    run(cli_cmd(*train_args(tiny_data_root, "one", "data.batch_size=4")), cwd=tmp_path)
    one, ddp = ckpt(tmp_path / "one", 20), ckpt(ddp_reference, 20)
    assert one["trainer"]["step"] == ddp["trainer"]["step"] == 20
    assert one["trainer"]["samples_in_epoch"] == ddp["trainer"]["samples_in_epoch"]
    diff = max_param_diff(one, ddp)
    print(f"max |param| difference, 1 x batch 4 vs DDP 2 x batch 2 after 20 steps: {diff:.2e}")
    assert diff <= 1e-6


def test_fsdp2_equals_ddp(tmp_path, tiny_data_root, ddp_reference):
    run(torchrun_cmd(*train_args(tiny_data_root, "fsdp", "distributed.strategy=fsdp")),
        cwd=tmp_path)
    fsdp, ddp = ckpt(tmp_path / "fsdp", 20), ckpt(ddp_reference, 20)
    diff = max_param_diff(fsdp, ddp)
    print(f"max |param| difference, FSDP2 vs DDP after 20 steps: {diff:.2e}")
    assert diff <= 1e-6
    # the end-of-epoch eval ran sharded on both ranks and saw the same numbers
    rows = [json.loads(x) for x in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (ddp_reference / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("val/acc1") for r in rows] == [r.get("val/acc1") for r in ref]


def dynamic_args(max_pixels: int) -> list[str]:
    """Dynamic batches on the DDP recipe. Every shape's pixel count (2 or 4 frames of 24x8,
    16x16 or 8x24) divides 3072, so 2 ranks x 3072 pixels take exactly the clips that 1 process
    x 6144 does, in the same plan: the runs must agree."""
    return ["data.train.repeat=4", "model.dynamic_img_size=true",
            f"data.dynamic_batch={{max_pixels: {max_pixels}, size: 16, num_frames: [2, 4], "
            "aspect_ratios: [0.5, 1.0, 2.0], multiple_of: 8}"]


def test_dynamic_batches_on_2_ranks_equal_one_process_with_twice_the_budget(tmp_path,
                                                                            tiny_data_root):
    run(torchrun_cmd(*train_args(tiny_data_root, "ddp", *dynamic_args(3072))), cwd=tmp_path)
    run(cli_cmd(*train_args(tiny_data_root, "one", *dynamic_args(6144))), cwd=tmp_path)
    ddp, one = ckpt(tmp_path / "ddp"), ckpt(tmp_path / "one")
    assert ddp["trainer"]["step"] == one["trainer"]["step"] > STEPS  # ~8 batches per epoch
    diff = max_param_diff(one, ddp)
    print(f"max |param| difference, dynamic batches, 1 process vs 2 ranks: {diff:.2e}")
    assert diff <= 1e-6


def launch_two_nodes(tmp_path: Path, args_per_node: list[list[str]], timeout: float = 150
                     ) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents of one process each, meeting through c10d on 127.0.0.1."""
    launcher = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                f"--rdzv-id=tubelet-{tmp_path.name}", "--max-restarts=0")
    procs = [subprocess.Popen(torchrun_cmd(*args, nproc=1, launcher=launcher), cwd=tmp_path,
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in args_per_node]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def test_two_nodes_on_localhost_train_and_match_single_node(tmp_path, tiny_data_root,
                                                            ddp_reference):
    args = train_args(tiny_data_root, "run")
    for proc in launch_two_nodes(tmp_path, [args, args]):
        assert proc.returncode == 0, proc.stderr[-3000:]
    last = ckpt(tmp_path / "run")
    assert last["trainer"]["step"] == STEPS and last["trainer"]["world_size"] == 2
    assert max_param_diff(last, ckpt(ddp_reference)) == 0.0  # same ranks, same sums


def test_ranks_with_different_recipes_refuse_to_start(tmp_path, tiny_data_root):
    a = train_args(tiny_data_root, "run")
    b = train_args(tiny_data_root, "run", "optimizer.lr=0.1")
    procs = launch_two_nodes(tmp_path, [a, b], timeout=90)
    for proc in procs:
        assert proc.returncode != 0
    stderr = "".join(p.stderr for p in procs)
    assert "error: config hash: ranks disagree" in stderr
    assert "/tubelet/" not in stderr  # one line each, no traceback through our package


@pytest.fixture(scope="module")
def odd_val(tmp_path_factory) -> tuple[Path, list[str]]:
    """A 5-class set with 3 test clips each (15: odd) and a random-init checkpoint for it."""
    tmp = tmp_path_factory.mktemp("odd")
    overrides = [f"data.train.root={tmp / 'data'}", "data.train.num_classes=5",
                 "data.train.num_train_per_class=1", "model.num_classes=5",
                 "task.type=counting_classification", "imports=[dist_tasks]",
                 "data.val_batch_size=7", f"checkpoint={tmp / 'init.pt'}"]
    node = load_config(DDP_RECIPE, overrides)["data"]["train"]
    ensure_synthetic_dataset(tmp / "data", num_classes=5, num_train_per_class=1,
                             num_test_per_class=3, num_frames=node["video_frames"],
                             size=node["size"])
    torch.manual_seed(0)
    torch.save({"model": build_model(load_config(DDP_RECIPE, overrides)).state_dict()},
               tmp / "init.pt")
    return tmp, overrides


def eval_metrics(stdout: str) -> list[dict]:
    """The JSON objects `tubelet eval` printed (rank 0 alone prints)."""
    decoder, out, i = json.JSONDecoder(), [], stdout.find("{")
    while i != -1:
        obj, end = decoder.raw_decode(stdout, i)
        out.append(obj)
        i = stdout.find("{", end)
    return out


@pytest.mark.parametrize("strategy", ["fsdp"])
def test_eval_over_two_ranks_of_an_odd_set_equals_one_process(odd_val, strategy):
    tmp, overrides = odd_val
    args = ["eval", str(DDP_RECIPE), *overrides]
    [single] = eval_metrics(run(cli_cmd(*args), cwd=tmp).stdout)
    # batch 7 over 8 + 7 clips: rank 0 runs 2 batches, rank 1 one; sharded FSDP must not hang
    both = eval_metrics(run(torchrun_cmd(*args, f"distributed.strategy={strategy}"), cwd=tmp,
                            timeout=90).stdout)
    assert single["val/num_samples"] == 15 and single["val/label_sum"] == 3 * (0 + 1 + 2 + 3 + 4)
    print(f"eval of 15 clips, 1 process: {single}; 2 ranks ({strategy}): {both}")
    assert both == [single]  # one document on stdout, as one process prints, not one per rank
