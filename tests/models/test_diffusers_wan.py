"""Wan 2.1's WanTransformer3DModel (text-to-video) as the stage-3 network, from tiny random parts saved with
save_pretrained: LoRA trains only the adapters and lowers the loss on a repeated batch, a full finetune updates
the base, the LoRA export loads into diffusers' own WanPipeline (pytorch_lora_weights.safetensors), and our
sampler and WanPipeline give the same latents from the same weights, prompt, noise and steps."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.optim import AdamW

from conftest import clip_sample, tiny_export, write_tar
from models.pretrained_parts import (
    PROMPT, assert_full_finetune_moves_the_base, assert_lora_trains_only_adapters, fixed_loss, latent_batch,
    tiny_t5_encoder, tiny_wan, tiny_wan_vae, train_steps,
)
from videogen.models.dit.diffusers_adapters import WanTransformer
from videogen.modules.dit import DiTModule
from videogen.modules.lr_schedule import WarmupCosine

@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {"wan": str(tiny_wan(root / "wan")), "umt5": str(tiny_t5_encoder(root / "umt5", umt5=True)),
            "vae": str(tiny_export(root / "vae"))}


def wan_module(parts, activation_checkpointing: bool = False, **net) -> DiTModule:
    torch.manual_seed(0)
    return DiTModule(WanTransformer(parts["wan"], **net), vae=parts["vae"], text_encoder=parts["umt5"],
                     text_max_length=8, caption_dropout=0.0, shift=3.0, timestep_spacing="flow_match",
                     ema_decay=None, optimizer=partial(AdamW, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=0), activation_checkpointing=activation_checkpointing)


def test_lora_steps_change_only_adapters_and_lower_the_loss(parts):
    module = wan_module(parts, lora_rank=4, lora_alpha=4)
    lora = {k: v.clone() for k, v in module.dit.transformer.named_parameters() if "lora_" in k}
    trainable = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert trainable == {id(p) for k, p in module.dit.transformer.named_parameters() if "lora_" in k}
    assert_lora_trains_only_adapters(module, latent_batch(), gain=0.97)
    assert any(not torch.equal(v, lora[k]) for k, v in module.dit.transformer.named_parameters() if "lora_" in k)
    assert all("lora_" in k for k in module.state_dict() if k.startswith("dit."))


def test_full_finetune_step_updates_the_base_weights(parts):
    module = wan_module(parts)
    assert len(module.dit.state_dict()) == len(module.dit.transformer.state_dict())
    assert "blocks.0.attn1.to_q.weight" in assert_full_finetune_moves_the_base(module)


def test_training_uses_the_fixed_shift_and_flow_matching_target(parts):
    """x_t = (1 - t) x0 + t noise and target noise - x0 at t = shift(logit-normal), timestep 1000 t to the net."""
    module = wan_module(parts, lora_rank=2)
    seen = {}

    def spy(mod, args, kwargs):
        seen["timestep"] = kwargs["timestep"].clone()

    module.dit.transformer.register_forward_pre_hook(spy, with_kwargs=True)
    fixed_loss(module, latent_batch())
    u = torch.sigmoid(torch.randn(2, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(seen["timestep"], 1000 * 3.0 * u / (1 + 2.0 * u))


def test_packing_refused_with_one_line(parts):
    net = WanTransformer(parts["wan"], lora_rank=2)
    with pytest.raises(ValueError, match="cannot train on packed rows.*buckets"):
        net([torch.randn(4, 3, 8, 12)], torch.rand(1), torch.randn(1, 8, 32), torch.ones(1, 8, dtype=torch.bool))


def test_hostile_folders_refused(tmp_path, parts):
    import json
    import shutil

    wrong = tmp_path / "wrong"
    shutil.copytree(parts["wan"], wrong)
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "_class_name": "EvilModel"}))
    with pytest.raises(ValueError, match="_class_name 'EvilModel' is not WanTransformer3DModel"):
        WanTransformer(str(wrong))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(config))
    torch.save({}, pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickled weights.*convert them to safetensors"):
        WanTransformer(str(pickled))
    with pytest.raises(ValueError, match="matched no layer"):
        WanTransformer(parts["wan"], lora_rank=2, lora_target_modules=["no_such_layer"])


@pytest.fixture(scope="module")
def lora_export(parts, tmp_path_factory):
    """A LoRA fit of 3 steps on pixel clips through the tiny VAE, exported at the end of fit."""
    from lightning.pytorch import Trainer

    from videogen.callbacks.export import StageExport
    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule

    root = tmp_path_factory.mktemp("fit")
    shards = root / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000000.tar", [clip_sample(f"k{i}", 48, 32, 9, seed=i) for i in range(4)])
    module = wan_module(parts, lora_rank=4, lora_alpha=8)
    module.optimizer = partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0)
    trainer = Trainer(accelerator="cpu", max_steps=3, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(root), limit_val_batches=0,
                      callbacks=[StageExport(str(root / "export"))])
    trainer.fit(module, datamodule=VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 48)], batch_size=2),
                                                   loader=LoaderOptions(num_workers=0, shuffle_buffer=2)))
    assert trainer.global_step == 3
    return root / "export"


def wan_pipeline(parts, scheduler_shift=3.0):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    return WanPipeline(tokenizer=AutoTokenizer.from_pretrained(parts["umt5"]),
                       text_encoder=UMT5EncoderModel.from_pretrained(parts["umt5"]), vae=tiny_wan_vae(4),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=scheduler_shift),
                       transformer=WanTransformer3DModel.from_pretrained(parts["wan"]))


def test_lora_export_loads_into_wan_pipeline_and_matches_our_sampler(parts, lora_export):
    import json

    from videogen.models.text import FrozenTextEncoder
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import generate_latents, load_trained_dit, sampling_kwargs

    files = sorted(p.name for p in lora_export.iterdir())
    assert files == ["config.yaml", "manifest.json", "model.safetensors", "pytorch_lora_weights.safetensors",
                     "stats.json"]
    stats = json.loads((lora_export / "stats.json").read_text())
    assert stats["shift"] == 3.0 and stats["timestep_spacing"] == "flow_match" and stats["process"] == "rectified_flow"
    from safetensors import safe_open

    with safe_open(str(lora_export / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)

    noise = torch.randn(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    pipe = wan_pipeline(parts)
    kw = dict(prompt=PROMPT, negative_prompt=NULL_CAPTION, height=32, width=48, num_frames=9, num_inference_steps=4,
              guidance_scale=4.0, max_sequence_length=8, output_type="latent")
    plain = pipe(latents=noise.clone(), **kw).frames
    pipe.load_lora_weights(str(lora_export))
    theirs = pipe(latents=noise.clone(), **kw).frames

    trained = load_trained_dit(str(lora_export))
    enc = FrozenTextEncoder(parts["umt5"], 8)
    (text, mask), (null, null_mask) = enc([PROMPT]), enc([NULL_CAPTION])
    ours = generate_latents(trained.dit, trained.stats, text, mask, null, null_mask, num_frames=9, height=32,
                            width=48, steps=4, cfg=4.0, noise=noise, **sampling_kwargs(trained.stats))
    assert ours.shape == theirs.shape == (1, 4, 3, 8, 12)
    assert (theirs - plain).abs().max() > 1e-3  # the finetuned adapters change the samples
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


def test_merged_export_samples_like_the_lora_and_videogen_sample_writes_a_video(parts, lora_export, tmp_path):
    from videogen.cli import main
    from videogen.commands.export import export_checkpoint
    from videogen.data.decode import PyAVDecoder
    from videogen.pretrained import load_export
    from videogen.models.dit.diffusers_adapters import DiffusersTransformer

    ckpt = next((lora_export.parent / "checkpoints").rglob("*.ckpt"), None) or next(lora_export.parent.rglob("*.ckpt"))
    merged = export_checkpoint(ckpt, tmp_path / "merged", merge_lora=True)
    assert not (merged / "pytorch_lora_weights.safetensors").exists()
    full, lora = load_export(merged, DiffusersTransformer).module, load_export(lora_export, DiffusersTransformer).module
    assert full.lora_rank is None and len(full.state_dict()) == len(full.transformer.state_dict())
    x, t = torch.randn(1, 4, 3, 8, 12), torch.tensor([0.6])
    text, mask = torch.randn(1, 8, 32), torch.ones(1, 8, dtype=torch.bool)
    assert torch.allclose(full(x, t, text, mask), lora(x, t, text, mask), atol=1e-5)
    out = tmp_path / "out.mp4"
    assert main(["sample", "--ckpt", str(lora_export), "--prompt", PROMPT, "--out", str(out), "--num-frames", "9",
                 "--height", "32", "--width", "48", "--steps", "2"]) == 0
    info = PyAVDecoder().probe(out.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)


def test_activation_checkpointing_gives_the_same_gradients_and_names_the_wrap_unit(parts):
    """DiTModule(activation_checkpointing) recomputes the adapter's transformer blocks in backward (applied in
    configure_model, as for our DiT): the same gradients, each block run again in backward."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    grads, calls = [], []
    for checkpointing in (False, True):
        module = wan_module(parts, lora_rank=4, activation_checkpointing=checkpointing)
        module.configure_model()
        with torch.no_grad():  # nonzero B so the adapters' A get gradients too
            for k, p in module.dit.transformer.named_parameters():
                if "lora_B" in k:
                    p.fill_(0.01)
        ran = []
        module.dit.transformer.blocks[0].ffn.register_forward_hook(lambda *_: ran.append(1))
        fixed_loss(module, latent_batch()).backward()
        grads.append({k: p.grad.clone() for k, p in module.dit.named_parameters() if p.requires_grad})
        calls.append(len(ran))
    assert calls[1] == 2 * calls[0] > 0
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
    assert module.dit.block_class is WanTransformerBlock


def test_a_lora_checkpoint_resumes_into_a_fresh_module(parts, lora_export):
    """The Lightning checkpoint holds the adapters only; a fresh LoRA module loads it strictly and has them."""
    ckpt = next(lora_export.parent.rglob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)
    fresh = wan_module(parts, lora_rank=4, lora_alpha=8)
    assert fresh.load_state_dict(state, strict=True) is not None
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):  # a missing adapter is still an error
        wan_module(parts, lora_rank=4, lora_alpha=8).load_state_dict(dict(list(state.items())[1:]), strict=True)


def test_videos_equal_wan_pipelines_through_its_diffusers_vae(parts, tmp_path):
    """The whole path in pixels: a LoRA trained on a diffusers Wan VAE folder's latents (its latents_mean/std
    normalisation), exported; our generate() decodes through that VAE to the video WanPipeline decodes."""
    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import save_export
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import generate, load_trained_dit, sampling_kwargs

    vae = tiny_wan_vae(4)
    vae.register_to_config(latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.0, 2.0, 0.5, 1.5])
    vae.save_pretrained(tmp_path / "wan_vae")
    torch.manual_seed(0)
    module = DiTModule(WanTransformer(parts["wan"], lora_rank=4, lora_alpha=8), vae=str(tmp_path / "wan_vae"),
                       text_encoder=parts["umt5"], text_max_length=8, caption_dropout=0.0, shift=3.0,
                       timestep_spacing="flow_match", ema_decay=None,
                       optimizer=partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=0))
    assert module.vae_export.stats["latent_std"] == [1.0, 2.0, 0.5, 1.5]
    train_steps(module, latent_batch(), 2)
    export = save_export(tmp_path / "export", module.dit, module.export_stats())

    trained = load_trained_dit(str(export))
    enc = FrozenTextEncoder(parts["umt5"], 8)
    (text, mask), (null, null_mask) = enc([PROMPT]), enc([NULL_CAPTION])
    noise = torch.randn(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    ours = generate(trained.dit, trained.vae_export.module, trained.stats, text, mask, null, null_mask, num_frames=9,
                    height=64, width=96, steps=3, cfg=4.0, noise=noise, **sampling_kwargs(trained.stats))
    pipe = wan_pipeline(parts)
    pipe.vae = type(vae).from_pretrained(tmp_path / "wan_vae")
    pipe.load_lora_weights(str(export))
    theirs = pipe(prompt=PROMPT, negative_prompt=NULL_CAPTION, height=64, width=96, num_frames=9,
                  num_inference_steps=3, guidance_scale=4.0, max_sequence_length=8, latents=noise.clone(),
                  output_type="pt").frames  # (B, T, 3, H, W) in [0, 1]
    assert ours.shape == (1, 3, 9, 64, 96)
    assert torch.allclose((ours + 1) / 2, theirs.permute(0, 2, 1, 3, 4), atol=1e-4), \
        ((ours + 1) / 2 - theirs.permute(0, 2, 1, 3, 4)).abs().max()
