"""DiT: patches, 3D RoPE, adaLN-Zero blocks, frame conditioning, FLOPs, presets, the fp32 bucket path
(packed rows: test_dit_packed.py)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models.dit_parts import C, TEXT_ATTENTION, TEXT_DIM, clips_and_text, packed, tiny  # noqa: F401 (packed: a fixture)
from videogen.models.configurable import from_config, to_config
from videogen.models.dit import (
    DiT,
    RotaryEmbedding3D,
    apply_rotary,
    dit_b,
    dit_l,
    dit_s,
    dit_tiny,
    pack,
    patchify,
    unpack,
    unpatchify,
)


@pytest.mark.parametrize("patch_size", [(1, 2, 2), (2, 2, 2), (1, 1, 1), (2, 4, 2)])
def test_patchify_round_trip(patch_size):
    x = torch.randn(2, 3, 4, 8, 8)
    tokens = patchify(x, patch_size)
    pt, ph, pw = patch_size
    assert tokens.shape == (2, (4 // pt) * (8 // ph) * (8 // pw), 3 * pt * ph * pw)
    assert torch.equal(unpatchify(tokens, patch_size, (4 // pt, 8 // ph, 8 // pw)), x)
    # token 0 is the first patch, channel-major inside it
    assert torch.equal(tokens[0, 0, : pt * ph * pw], x[0, 0, :pt, :ph, :pw].flatten())


def test_pack_round_trip_and_layout():
    latents = [torch.randn(C, 2, 4, 6), torch.randn(C, 1, 8, 2)]
    packed = pack(latents, (1, 2, 2))
    assert packed.tokens.shape == (1, 2 * 2 * 3 + 1 * 4 * 1, C * 4)
    assert packed.segment_ids.tolist() == [[0] * 12 + [1] * 4]
    assert packed.positions[0, 11].tolist() == [1, 1, 2] and packed.positions[0, 12].tolist() == [0, 0, 0]
    assert all(torch.equal(a, b) for a, b in zip(unpack(packed.tokens, packed.grids, (1, 2, 2)), latents))


def test_patch_size_error_names_the_key():
    with pytest.raises(ValueError, match=r"H=5 .*patch_size=\(1, 2, 2\)"):
        patchify(torch.randn(1, 4, 2, 5, 4), (1, 2, 2))


def test_rope_relative_position_property_at_unseen_sizes():
    """q.k after rotation depends only on the (t, h, w) offset, also far beyond any training size."""
    rope = RotaryEmbedding3D(head_dim=32)
    assert rope.axes_dim == (8, 12, 12) and RotaryEmbedding3D(64).axes_dim == (16, 24, 24)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64), torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64)

    def logit(pq, pk):
        cq, sq = rope(torch.tensor([[pq]]))
        ck, sk = rope(torch.tensor([[pk]]))
        return (apply_rotary(q, cq[:, None].double(), sq[:, None].double()) * apply_rotary(k, ck[:, None].double(), sk[:, None].double())).sum()

    base = logit([3, 5, 7], [1, 2, 9])
    for shift in ([10, 0, 0], [0, 400, -3], [250, 123, 777]):
        moved = logit([3 + shift[0], 5 + shift[1], 7 + shift[2]], [1 + shift[0], 2 + shift[1], 9 + shift[2]])
        assert moved.item() == pytest.approx(base.item(), abs=1e-3)
    assert abs(logit([3, 5, 7], [1, 2, 8]).item() - base.item()) > 1e-3  # but the offset matters
    # rotation preserves norms; position 0 is the identity
    c, s = rope(torch.tensor([[[0, 0, 0], [5, 90, 300]]]))
    x = torch.randn(1, 1, 2, 32)
    assert torch.equal(apply_rotary(x, c[:, None], s[:, None])[..., 0, :], x[..., 0, :])
    assert torch.allclose(apply_rotary(x, c[:, None], s[:, None]).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="rope_axes_dim"):
        RotaryEmbedding3D(32, axes_dim=(10, 10, 10))



@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_adaln_zero_init_outputs_exact_zero(text_attention):
    model = dit_tiny(in_channels=C, text_dim=TEXT_DIM, text_attention=text_attention)
    latents, t, text, text_mask = clips_and_text()
    out = model(latents[0][None].repeat(2, 1, 1, 1, 1), t[:2], text[:2], text_mask[:2])
    assert out.shape == (2, C, 3, 8, 8) and torch.count_nonzero(out) == 0
    assert all(torch.count_nonzero(y) == 0 for y in model(latents, t, text, text_mask))
    # zero output but not a dead network: the final layer still gets gradient
    out = model(latents[0][None], t[:1], text[:1], text_mask[:1])
    loss = (out - 1).pow(2).mean()
    loss.backward()
    assert model.final_layer.linear.bias.grad.abs().sum() > 0


# main at 99e149e, this tiny model and input (test below), fp32: out.flatten()[::97], then sum and |.|-sum
MAIN_BUCKET_OUTPUT = {
    "cross": [0.6715283, -0.7210051, -1.0554562, -0.976026, 0.6600429, 0.2383707, 0.5782453, -0.6360296, -0.9098437,
              0.0761475, 0.1641066, -1.0883253, 1.1152794, -0.9630721, -0.3310026, 1.5788463, -249.61017, 1052.15173],
    "joint": [0.712707, 0.4116081, -0.3937405, 0.2389255, -0.8560601, 0.2915747, 1.5055033, 1.1954705, -0.6327652,
              0.0521835, 0.5824661, 0.4648678, 0.8859355, 0.7764989, 0.219325, 0.6784618, 344.86401, 1117.95251],
}


@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_bucket_forward_in_fp32_is_mains(text_attention):
    """The bucket path's fp32 math is unchanged by packed attention, the fp32 residual and compile hooks:
    the same outputs as main at 99e149e (which the quickstart's prompt-following figures were measured on)."""
    torch.manual_seed(0)
    model = dit_tiny(in_channels=4, text_dim=8, text_attention=text_attention)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([0.3, 0.8])
    text = torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        y = model.eval()(x, t, text, mask)
    got = y.flatten()[::97].tolist() + [y.sum().item(), y.abs().sum().item()]
    assert got == pytest.approx(MAIN_BUCKET_OUTPUT[text_attention], rel=1e-5, abs=1e-5)


def test_clips_never_see_each_other(packed):
    """Changing one clip's latent, caption or timestep leaves every other clip's output bit-identical."""
    model, latents, t, text, text_mask = packed
    with torch.no_grad():
        before = model(latents, t, text, text_mask)
        changed = [latents[0], latents[1] + 5 * torch.randn_like(latents[1]), latents[2]]
        text2, mask2, t2 = text.clone(), text_mask.clone(), t.clone()
        text2[1] += 3.0
        mask2[1, 2:] = False
        t2[1] = 0.01
        after = model(changed, t2, text2, mask2)
    assert not torch.allclose(before[1], after[1], atol=1e-3)
    for i in (0, 2):
        torch.testing.assert_close(before[i], after[i], atol=1e-6, rtol=0)


def test_padding_tokens_are_ignored(packed):
    """Rows padded with segment id -1 (as a packer that fills fixed-length rows makes) change nothing."""
    model, latents, t, text, text_mask = packed
    packed = pack(latents[:2], model.patch_size)
    n = packed.tokens.shape[1]
    tokens = torch.cat([packed.tokens, torch.randn(1, 7, packed.tokens.shape[2])], dim=1)
    positions = torch.cat([packed.positions, torch.zeros(1, 7, 3, dtype=torch.long)], dim=1)
    segment_ids = torch.cat([packed.segment_ids, torch.full((1, 7), -1)], dim=1)
    with torch.no_grad():
        args = (t[None, :2], text[None, :2], text_mask[None, :2])
        plain = model.forward_tokens(packed.tokens, packed.positions, packed.segment_ids, *args)
        padded = model.forward_tokens(tokens, positions, segment_ids, *args)
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:, :n], plain, atol=1e-6, rtol=0)


def test_pooled_text_sees_only_real_tokens_and_drives_the_output():
    """The pooled caption (a mean over the masked tokens) changes the output; masked-out tokens do not."""
    latents, t, text, text_mask = clips_and_text()
    x = latents[0][None]
    garbage = text.clone()
    garbage[0, 3:] = 100.0  # caption 0 has three real tokens: the rest is padding
    for pooled in (True, False):
        for text_attention in TEXT_ATTENTION:
            model = tiny(pooled_text=pooled, text_attention=text_attention)
            with torch.no_grad():
                out = model(x, t[:1], text[:1], text_mask[:1])
                torch.testing.assert_close(model(x, t[:1], garbage[:1], text_mask[:1]), out, atol=1e-6, rtol=0)
                packed = model([x[0]], t[:1], garbage[:1], text_mask[:1])[0]
                torch.testing.assert_close(packed, out[0], atol=2e-5, rtol=1e-4)
    model = tiny(pooled_text=True)
    with torch.no_grad():
        base = model(x, t[:1], text[:1], text_mask[:1])
        model.pooled_embedder[2].weight.zero_()  # the pooled path off (bias stays): outputs move
        model.pooled_embedder[2].bias.zero_()
        assert (model(x, t[:1], text[:1], text_mask[:1]) - base).abs().max() > 1e-3
    assert tiny(pooled_text=False).pooled_embedder is None


def test_fraction_features_are_each_clips_own_relative_position():
    from videogen.models.dit.model import FRACTION_FREQUENCIES, fraction_features

    packed = pack([torch.zeros(C, 2, 4, 6), torch.zeros(C, 5, 10, 2)], (1, 2, 2))  # grids (2,2,3) and (5,5,1)
    feats = fraction_features(packed.positions, packed.segment_ids, 2)
    assert feats.shape == (1, 12 + 25, 3 * 2 * FRACTION_FREQUENCIES)
    alone = fraction_features(packed.positions[:, 12:], torch.zeros(1, 25, dtype=torch.long), 1)
    torch.testing.assert_close(feats[:, 12:], alone)  # the second clip's features ignore the first clip
    first = torch.tensor([0.5 / 2, 0.5 / 2, 0.5 / 3]) * torch.pi  # (i + 0.5) / n per axis, lowest frequency
    torch.testing.assert_close(feats[0, 0, 0::FRACTION_FREQUENCIES * 2], first.sin())
    from videogen.models.dit.patchify import grid_positions

    big = fraction_features(grid_positions((4, 4, 6))[None], torch.zeros(1, 96, dtype=torch.long), 1)
    torch.testing.assert_close(big[0, 0, 0], torch.tensor(0.5 / 4 * torch.pi).sin())  # sizes differ, same rule


@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_empty_caption_is_finite_and_unseen_resolutions_work(text_attention):
    model = tiny(text_attention=text_attention)
    _, _, text, _ = clips_and_text()
    no_text = torch.zeros(2, 5, dtype=torch.bool)  # e.g. the unconditional branch of CFG
    for shape in [(1, 2, 2), (5, 14, 22), (9, 6, 40)]:
        with torch.no_grad():
            out = model(torch.randn(2, C, *shape), torch.rand(2), text[:2], no_text)
        assert out.shape == (2, C, *shape) and torch.isfinite(out).all()


def test_frame_conditioning_channels():
    model = tiny(frame_conditioning=True)
    assert model.x_embedder.in_features == (2 * C + 1) * 4
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, C, 3, 4, 4, generator=g), torch.randn(1, C, 3, 4, 4, generator=g)
    t, text, mask = torch.tensor([0.7]), torch.randn(1, 2, TEXT_DIM, generator=g), torch.ones(1, 2, dtype=torch.bool)
    first_frame = torch.zeros(1, 1, 3, 4, 4)
    first_frame[:, :, 0] = 1  # image-to-video: frame 0 is given
    with torch.no_grad():
        plain = model(x, t, text, mask)
        assert torch.equal(plain, model(x, t, text, mask, cond=cond, cond_mask=torch.zeros_like(first_frame)))
        i2v = model(x, t, text, mask, cond=cond, cond_mask=first_frame)
        assert not torch.allclose(i2v, plain, atol=1e-3)
        # what the mask hides does not matter: only the given frame of cond is seen
        cond2 = cond.clone()
        cond2[:, :, 1:] += 10
        assert torch.equal(i2v, model(x, t, text, mask, cond=cond2, cond_mask=first_frame))
        packed = model([x[0]], t, text, mask, cond=[cond[0]], cond_mask=[first_frame[0]])
        torch.testing.assert_close(packed[0], i2v[0], atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="frame_conditioning=False"):
        tiny()(x, t, text, mask, cond=cond, cond_mask=first_frame)


@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_activation_checkpointing_recomputes_blocks_with_the_same_gradients(text_attention):
    """DiTModule(activation_checkpointing) applies checkpoint_blocks from outside the model: each block
    runs again in backward, gradients and state-dict names are unchanged, and without gradients nothing is
    recomputed."""
    from videogen.modules.dit import checkpoint_blocks

    latents, t, text, text_mask = clips_and_text()
    grads, calls = [], []
    for flag in (False, True):
        torch.manual_seed(0)
        model = tiny(text_attention=text_attention).train()
        names = list(model.state_dict())
        if flag:
            checkpoint_blocks(model)
        assert list(model.state_dict()) == names
        ran = []
        model.blocks[0].mlp.register_forward_hook(lambda *_: ran.append(1))
        out = model(latents, t, text, text_mask)
        sum(o.pow(2).mean() for o in out).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        calls.append(len(ran))
        with torch.no_grad():
            model(latents, t, text, text_mask)
        calls.append(len(ran) - calls[-1])
    assert calls == [1, 1, 2, 1]  # plain: forward only; checkpointed: forward + recompute in backward
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_an_export_that_recorded_gradient_checkpointing_still_loads():
    config = to_config(tiny())
    config["init_args"]["gradient_checkpointing"] = True  # a DiT init arg until DiTModule took it over
    assert isinstance(from_config(config), DiT)


def test_forward_flops_match_torch_flop_counter(packed):
    model, latents, t, text, text_mask = packed
    x = torch.randn(2, C, 3, 8, 8)
    # the math SDPA backend runs attention as matmuls the counter sees (the fused CPU kernel is not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t[:2], text[:2], text_mask[:2])
    assert model.forward_flops([48, 48], text_len=5) == counter.get_total_flops()
    # packed: attention runs clip by clip over each clip's own tokens and real caption keys, so the counted
    # FLOPs are the analytic count (same-clip pairs only) less the caption padding it does not compute
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(latents, t, text, text_mask)
    sizes, d, keys = [48, 6, 12], model.hidden_size, 6
    real_keys = (text_mask.sum(1) + 1).tolist()  # + the null text token
    skipped = len(model.blocks) * 4 * d * sum(n * (keys - k) for n, k in zip(sizes, real_keys))
    assert model.forward_flops(sizes, text_len=5) - skipped == counter.get_total_flops()


def test_presets_and_config_errors():
    with torch.device("meta"):  # parameter counts without allocating dit_l
        counts = {f.__name__: sum(p.numel() for p in f().parameters()) for f in (dit_tiny, dit_s, dit_b, dit_l)}
    assert counts["dit_tiny"] < counts["dit_s"] < counts["dit_b"] < counts["dit_l"]
    assert 30e6 < counts["dit_s"] < 60e6 and 400e6 < counts["dit_l"] < 600e6, counts
    assert dit_s(depth=2).blocks.__len__() == 2  # presets take overrides
    with pytest.raises(ValueError, match="num_heads"):
        DiT(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="attention_backend"):
        DiT(hidden_size=64, depth=1, num_heads=2, attention_backend="flex")
    with pytest.raises(ValueError, match="text_attention"):
        DiT(hidden_size=64, depth=1, num_heads=2, text_attention="concat")


def test_joint_attention_has_no_cross_attention_layer_and_fewer_flops():
    """Joint attention drops the cross-attention's q and output projections: 2 N D^2 multiply-adds per block."""
    cross, joint = tiny(), tiny(text_attention="joint")
    assert all(b.cross_attn is None and b.attn.text_kv is not None for b in joint.blocks)
    assert all(b.cross_attn is not None and b.attn.text_kv is None for b in cross.blocks)
    n, d = 48, joint.hidden_size
    assert cross.forward_flops([n], 5) - joint.forward_flops([n], 5) == len(joint.blocks) * 2 * n * d * 2 * d
    # the caption still steers the output through the joint softmax
    latents, t, text, text_mask = clips_and_text()
    with torch.no_grad():
        out = joint(latents[0][None], t[:1], text[:1], text_mask[:1])
        other = joint(latents[0][None], t[:1], text[1:2], text_mask[:1])
    assert (out - other).abs().max() > 1e-3


@pytest.mark.slow
def test_forward_traces_as_one_graph():
    """torch.compile-friendly: dynamo captures a bucket forward with no graph break (a pack's per-clip CPU
    attention loop runs between graphs, see tests/modules/test_dit_compile.py)."""
    model = tiny()
    latents, t, text, text_mask = clips_and_text()
    with torch.no_grad():
        x = latents[0][None].repeat(2, 1, 1, 1, 1)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, t[:2], text[:2], text_mask[:2]), model(x, t[:2], text[:2], text_mask[:2]))


def test_bf16_model_matches_fp32():
    """A model cast to bf16 (bf16-true training) keeps RoPE/timestep frequencies in fp32 and stays close."""
    model = tiny()
    latents, t, text, text_mask = clips_and_text()
    with torch.no_grad():
        ref = model(latents, t, text, text_mask)
        low = model.to(torch.bfloat16)([x.bfloat16() for x in latents], t, text.bfloat16(), text_mask)
    for a, b in zip(ref, low):
        assert b.dtype == torch.bfloat16
        assert (a - b.float()).norm() / a.norm() < 0.05
