"""`train.compile` (engine/switches.py): the forward is compiled in place by inductor, so the
state dict keeps its names (no `_orig_mod.`), a checkpoint of the compiled model loads into a
plain one (resume, export), and the numbers stay those of the plain model up to float
reordering. The one compile test of CI: a tiny model, because inductor's C++ build dominates."""
from __future__ import annotations

import io
import shutil

import pytest
import torch
from torch import nn

from tubelet.engine.switches import compile_model

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="inductor compiles C++ kernels on CPU and needs a C compiler")
def test_compiled_model_keeps_names_and_numbers():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    compiled = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    compiled.load_state_dict(plain.state_dict())
    compile_model(compiled, mode="default")
    x = torch.randn(4, 8)
    plain(x).square().mean().backward()
    out = compiled(x)
    out.square().mean().backward()
    torch.testing.assert_close(out, plain(x))
    for (name, a), (_, b) in zip(plain.named_parameters(), compiled.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    state = compiled.state_dict()
    assert list(state) == list(plain.state_dict())  # no `_orig_mod.` prefix
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))  # a plain model resumes it
    assert torch.equal(fresh(x), plain(x))
