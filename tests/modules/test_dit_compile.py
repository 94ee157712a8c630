"""``DiTModule(compile_blocks=True)``: torch.compile applied to each DiT block from outside the model
(inductor on the CPU here), numerically the eager model for bucket and packed batches, forward and backward."""

import copy

import pytest
import torch

from conftest import tiny_export
from videogen.models.dit import dit_tiny
from videogen.modules.dit import DiTModule, compile_blocks


def test_compile_blocks_is_applied_in_configure_model(tmp_path):
    module = DiTModule(dit_tiny(in_channels=4, text_dim=384), vae=str(tiny_export(tmp_path / "vae")), ema_decay=0.9,
                       compile_blocks=True)
    names = sorted(module.state_dict())
    module.configure_model()
    assert all(block._compiled_call_impl is not None for block in module.dit.blocks)
    assert all(block._compiled_call_impl is None for block in module.ema.module.blocks)  # the EMA stays eager
    assert sorted(module.state_dict()) == names  # checkpoints and exports keep their names


@pytest.mark.slow
def test_compiled_blocks_equal_eager_for_buckets_and_packs():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = dit_tiny(in_channels=4, text_dim=8, depth=2)
    with torch.no_grad():
        for p in eager.parameters():
            p.normal_(0, 0.1)
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    g = torch.Generator().manual_seed(0)
    bucket = (torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([0.2, 0.7]))
    pack = ([torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 1, 4, 6, generator=g)], torch.tensor([0.4, 0.9]))
    text, mask = torch.randn(2, 5, 8, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    for x, t in (bucket, pack):
        results = []
        for model in (eager, compiled):
            model.zero_grad()
            out = model.train()(x, t, text, mask)
            outs = list(out) if isinstance(out, list) else [out]
            sum(o.pow(2).mean() for o in outs).backward()
            results.append((outs, {k: p.grad.clone() for k, p in model.named_parameters()}))
        (out_e, grad_e), (out_c, grad_c) = results
        for a, b in zip(out_e, out_c):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
        assert sum(v.abs().sum() for v in grad_e.values()) > 0
        for k in grad_e:
            torch.testing.assert_close(grad_c[k], grad_e[k], atol=1e-5, rtol=1e-4, msg=k)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # inductor compiled graphs, for both kinds
