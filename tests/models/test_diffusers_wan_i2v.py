"""Wan 2.1 image-to-video (WanTransformer3DModel with image_dim) as the stage-3 network from tiny random parts:
every clip is trained on its first frame's conditioning (CLIP tokens, latents of [frame, zero frames...], frame-0
mask channels), LoRA trains only the adapters and lowers the loss, the network call and guidance match diffusers'
WanImageToVideoPipeline given its own conditioning, our CLIP path matches its encode_image, and `videogen sample
--image` keeps the given first frame's latent."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch.optim import AdamW

from models.pretrained_parts import (
    PROMPT, fixed_loss, tiny_clip_vision, tiny_t5_encoder, tiny_wan, tiny_wan_vae, train_steps,
)
from conftest import tiny_export
from videogen.models.dit.diffusers_adapters import WanTransformer
from videogen.modules.dit import DiTModule
from videogen.modules.lr_schedule import WarmupCosine


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_i2v")
    return {"wan": str(tiny_wan(root / "wan", in_channels=12, image_dim=32)),
            "umt5": str(tiny_t5_encoder(root / "umt5", umt5=True)),
            "clip": str(tiny_clip_vision(root)), "vae": str(tiny_export(root / "vae"))}


def i2v_module(parts, **net) -> DiTModule:
    torch.manual_seed(0)
    return DiTModule(WanTransformer(parts["wan"], **net), vae=parts["vae"], text_encoder=parts["umt5"],
                     image_encoder=parts["clip"], text_max_length=8, caption_dropout=0.0, shift=3.0,
                     timestep_spacing="flow_match", ema_decay=None,
                     optimizer=partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=0))


def video_batch():
    g = torch.Generator().manual_seed(2)
    return {"video": (torch.rand(2, 3, 9, 32, 48, generator=g) * 2 - 1), "caption": [PROMPT, "a blue circle"],
            "meta": [{}, {}]}


def test_lora_steps_on_first_frame_conditioning(parts):
    module = i2v_module(parts, lora_rank=4)
    assert module.dit.image_to_video and module.dit.mask_channels == 4
    seen = {}
    module.dit.transformer.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(x=kw["hidden_states"], img=kw["encoder_hidden_states_image"]), with_kwargs=True)
    base = {k: v.clone() for k, v in module.dit.transformer.named_parameters() if "lora_" not in k}
    batch = video_batch()
    before = fixed_loss(module, batch).item()
    x = seen["x"]  # b (4 + 4 + 4) t h w: x_t, mask channels, the conditioning latents
    assert x.shape == (2, 12, 3, 8, 12) and seen["img"].shape == (2, 5, 32)
    assert torch.equal(x[:, 4:8, 0], torch.ones_like(x[:, 4:8, 0])) and not x[:, 4:8, 1:].any()
    from videogen.encoding import encode_latents, normalize_latents

    first = batch["video"][:, :, :1]
    clip = torch.cat([first, torch.zeros_like(batch["video"][:, :, 1:])], dim=2)
    assert torch.allclose(x[:, 8:], normalize_latents(encode_latents(module.vae, clip), module.vae_export.stats))
    losses = train_steps(module, batch, 5)
    after = fixed_loss(module, batch).item()
    assert all(b < a for a, b in zip(losses, losses[1:] + [after])) and after < before * 0.98, (losses, after)
    assert all(torch.equal(v, base[k]) for k, v in module.dit.transformer.named_parameters() if "lora_" not in k)


def test_i2v_needs_its_image_encoder_and_pixels(parts):
    with pytest.raises(ValueError, match="image_encoder: an image-to-video Wan needs its CLIP"):
        DiTModule(WanTransformer(parts["wan"]), vae=parts["vae"], text_encoder=parts["umt5"], text_max_length=8)
    module = i2v_module(parts, lora_rank=2)
    with pytest.raises(ValueError, match="trains on pixel bucket batches"):
        fixed_loss(module, {"latent": torch.randn(2, 4, 3, 8, 12), "caption": ["a", "b"], "meta": [{}, {}]})


def test_network_call_matches_wan_image_to_video_pipeline(parts, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from PIL import Image
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

    from videogen.models.dit.image_encoder import FrozenImageEncoder
    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import save_export
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import Conditioning, generate_latents, load_trained_dit, sampling_kwargs

    module = i2v_module(parts, lora_rank=4, lora_alpha=8)
    train_steps(module, video_batch(), 2)
    export = save_export(tmp_path / "export", module.dit, module.export_stats())
    pipe = WanImageToVideoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(parts["umt5"]), text_encoder=UMT5EncoderModel.from_pretrained(parts["umt5"]),
        vae=tiny_wan_vae(4), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=CLIPImageProcessor.from_pretrained(parts["clip"].replace("image_encoder", "image_processor")),
        image_encoder=CLIPVisionModel.from_pretrained(parts["clip"]),
        transformer=WanTransformer3DModel.from_pretrained(parts["wan"]))
    pipe.load_lora_weights(str(export))
    assert any("add_k_proj.lora_B" in k for k, _ in pipe.transformer.named_parameters())  # the image keys have LoRA
    image = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    noise = torch.randn(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    # the prompts as WanPipeline encodes them (test_diffusers_wan shows FrozenTextEncoder's are those): diffusers
    # 0.42.1's WanImageToVideoPipeline calls ftfy on prompt strings without checking it is installed
    enc = FrozenTextEncoder(parts["umt5"], 8)
    (text, mask), (null, null_mask) = enc([PROMPT]), enc([NULL_CAPTION])
    theirs = pipe(image=image, prompt_embeds=text, negative_prompt_embeds=null, height=64, width=96, num_frames=9,
                  num_inference_steps=3, guidance_scale=4.0, max_sequence_length=8, latents=noise.clone(),
                  output_type="latent").frames
    # the pipeline's own conditioning (its VAE: a diffusers one), given to our sampler
    pixels = pipe.video_processor.preprocess(image, height=64, width=96).to(torch.float32)
    _, condition = pipe.prepare_latents(pixels, 1, 4, 64, 96, 9, torch.float32, torch.device("cpu"), None,
                                        latents=noise.clone())
    embeds = pipe.encode_image(image, torch.device("cpu"))
    mine = FrozenImageEncoder(parts["clip"])(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None] / 127.5 - 1)
    assert torch.allclose(mine, embeds, atol=1e-5)  # our CLIP path is encode_image's

    trained = load_trained_dit(str(export))
    assert trained.stats["image_encoder"] == parts["clip"]
    stats = {**trained.stats, "spatial_compression": 8}  # the pipeline's VAE's grid
    net = {"cond": condition[:, 4:], "cond_mask": condition[:, :1], "image_embeds": embeds}
    ours = generate_latents(trained.dit, stats, text, mask, null, null_mask, num_frames=9, height=64, width=96, steps=3,
                            cfg=4.0, noise=noise, net_kwargs=net, **sampling_kwargs(stats))
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    kept = generate_latents(trained.dit, stats, text, mask, null, null_mask, num_frames=9, height=64, width=96,
                            steps=3, cfg=4.0, noise=noise, net_kwargs=net, keep=Conditioning(condition[:, 4:],
                                                                                            condition[:, :1]),
                            **sampling_kwargs(stats))
    assert torch.equal(kept[:, :, 0], condition[:, 4:, 0]) and torch.equal(kept[:, :, 1:], ours[:, :, 1:])


def test_videogen_sample_image_keeps_the_first_frame_latent(parts, tmp_path, monkeypatch):
    from PIL import Image

    from videogen.cli import main
    from videogen.data.decode import PyAVDecoder
    from videogen.pretrained import save_export
    import videogen.pipelines.video as sampling

    module = i2v_module(parts, lora_rank=2)
    export = save_export(tmp_path / "export", module.dit, module.export_stats())
    img = tmp_path / "first.png"
    Image.fromarray((np.random.default_rng(1).random((32, 48, 3)) * 255).astype(np.uint8)).save(img)
    seen = {}
    real = sampling.generate_latents

    def spy(*args, **kw):
        seen["z"], seen["keep"] = real(*args, **kw), kw["keep"]
        return seen["z"]

    monkeypatch.setattr(sampling, "generate_latents", spy)
    out = tmp_path / "out.mp4"
    assert main(["sample", "--ckpt", str(export), "--prompt", PROMPT, "--image", str(img), "--out", str(out),
                 "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "2"]) == 0
    assert torch.equal(seen["z"][:, :, 0], seen["keep"].latents[:, :, 0])
    info = PyAVDecoder().probe(out.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)
    assert main(["sample", "--ckpt", str(export), "--prompt", PROMPT, "--out", str(out)]) == 2  # no --image


def test_image_encoder_folder_refused_clearly(tmp_path, parts):
    import json
    import shutil

    from videogen.models.dit.image_encoder import FrozenImageEncoder

    wrong = tmp_path / "wrong" / "image_encoder"
    shutil.copytree(parts["clip"], wrong)
    shutil.copytree(parts["clip"].replace("image_encoder", "image_processor"), wrong.parent / "image_processor")
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert' is not a CLIP vision model"):
        FrozenImageEncoder(str(wrong))
    (wrong / "config.json").write_text(json.dumps(config))
    for f in wrong.glob("*.safetensors"):
        f.unlink()
    torch.save({}, wrong / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no safetensors weights"):
        FrozenImageEncoder(str(wrong))
