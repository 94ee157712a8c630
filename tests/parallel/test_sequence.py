"""Ulysses sequence parallelism on real gloo processes (2 and 4 CPU ranks): the DiT's outputs and every
parameter's gradient (after the data-parallel average DDP/FSDP apply) equal one process's, for bucket
and packed batches, cross and joint text attention, token counts that divide the degree and ones that
need padding."""

import pytest
import torch
import torch.distributed as dist

from conftest import spawn_ranks

HEADS = 4  # divisible by both degrees


def _dit(text_attention: str):
    from videogen.models.dit import DiT

    torch.manual_seed(0)
    dit = DiT(in_channels=4, hidden_size=64, depth=2, num_heads=HEADS, text_dim=16, frame_conditioning=True,
              text_attention=text_attention)
    with torch.no_grad():  # no zero-initialised gates: every parameter gets a gradient worth comparing
        for p in dit.parameters():
            p.normal_(0, 0.2)
    return dit.double()  # float64: what is compared is the parallel math, not float32 summation order


def _inputs(kind: str):
    g = torch.Generator().manual_seed(1)
    text = torch.randn(3, 5, 16, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    if kind == "packed":  # 12 + 12 + 1 = 25 tokens: padded to the degree
        latents = [torch.randn(4, *s, generator=g) for s in ((3, 4, 4), (2, 4, 6), (1, 2, 2))]
        return {"latents": latents, "t": torch.tensor([0.2, 0.5, 0.9]), "text": text, "text_mask": text_mask,
                "cond": [torch.randn_like(x) for x in latents],
                "cond_mask": [(torch.arange(x.shape[1]) == 0).float().view(1, -1, 1, 1).expand(1, *x.shape[1:])
                              for x in latents]}
    size = (3, 4, 4) if kind == "bucket" else (3, 2, 6)  # 12 tokens per clip, or 9 (padded)
    x = torch.randn(2, 4, *size, generator=g)
    return {"x": x, "t": torch.tensor([0.3, 0.7]), "text": text[:2], "text_mask": text_mask[:2],
            "cond": torch.randn_like(x), "cond_mask": torch.zeros(2, 1, *size).index_fill_(2, torch.tensor([0]), 1.0)}


def _double(inputs: dict) -> dict:
    def cast(v):
        return [cast(x) for x in v] if isinstance(v, list) else v.double() if v.is_floating_point() else v

    return {k: cast(v) for k, v in inputs.items()}


def _forward_backward(dit, kind: str, inputs: dict) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    dit.zero_grad()
    if kind == "packed":
        outs = dit(inputs["latents"], inputs["t"], inputs["text"], inputs["text_mask"], cond=inputs["cond"],
                   cond_mask=inputs["cond_mask"])
    else:
        outs = [dit(inputs["x"], inputs["t"], inputs["text"], inputs["text_mask"], cond=inputs["cond"],
                    cond_mask=inputs["cond_mask"])]
    g = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() + o.pow(2).mean() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in dit.named_parameters()}


def _rank_main(rank: int, world: int) -> dict:
    torch.set_num_threads(1)
    from videogen.parallel.sequence import UlyssesAttention, UlyssesShard, apply_sequence_parallel, sequence_groups

    group, seq_rank, data_rank = sequence_groups(world)
    result = {"seq_rank": seq_rank, "data_rank": data_rank, "cases": {}}
    for text_attention in ("cross", "joint"):
        for kind in ("bucket", "bucket_padded", "packed"):
            dit, inputs = _dit(text_attention), _double(_inputs(kind))
            ref_out, ref_grad = _forward_backward(dit, kind, inputs)
            dits = apply_sequence_parallel(dit, UlyssesShard(group, seq_rank, world))
            wrapped = sum(isinstance(m, UlyssesAttention) for m in dit.modules())
            out_sp, grad_sp = _forward_backward(dit, kind, inputs)
            for g in grad_sp.values():  # what DDP / FSDP do over all ranks
                dist.all_reduce(g, op=dist.ReduceOp.AVG)
            out_err = max(float((a - b).abs().max()) for a, b in zip(out_sp, ref_out))
            grad_err = {n: float((grad_sp[n] - ref_grad[n]).abs().max() / ref_grad[n].abs().max().clamp_min(1e-12))
                        for n in ref_grad}
            result["cases"][f"{text_attention}-{kind}"] = {
                "dits": dits, "wrapped": wrapped, "out_err": out_err, "out_scale": max(float(o.abs().max()) for o in ref_out),
                "shapes": [list(o.shape) for o in out_sp], "ref_shapes": [list(o.shape) for o in ref_out],
                "grad_rel_err": max(grad_err.values()), "worst": max(grad_err, key=grad_err.get),
                "zero_grads": [n for n, g in ref_grad.items() if not g.abs().max() > 0]}
    return result


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 4])
def test_ulysses_forward_and_gradients_equal_one_process(tmp_path, degree):
    ranks = spawn_ranks(_rank_main, degree, out=tmp_path / "result.json")
    assert [r["seq_rank"] for r in ranks] == list(range(degree)) and {r["data_rank"] for r in ranks} == {0}
    for name, case in ranks[0]["cases"].items():
        assert case["dits"] == 1 and case["wrapped"] == 2  # the self-attention core of both blocks
        assert case["shapes"] == case["ref_shapes"], name
        assert case["zero_grads"] == [], name  # every parameter is checked with a real gradient
        for r in ranks:  # every rank returns the whole output, equal to one process's
            assert r["cases"][name]["out_err"] <= 1e-9 * case["out_scale"], (name, r["cases"][name])
            assert r["cases"][name]["grad_rel_err"] <= 1e-9, (name, r["cases"][name]["worst"], r["cases"][name]["grad_rel_err"])
