"""``videogen sample``: prompts -> mp4 files with a trained DiT (its export folder or a checkpoint).

The DiT's export names the VAE it was trained with (path and weights hash) and its text encoder;
both are loaded from there, and a VAE whose weights changed since is refused. It also records the
diffusion process and the timestep shift training used; sampling uses both (``--shift`` overrides the
shift with a fixed value).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

HELP = "generate videos from prompts (text-, image- or clip-conditioned) with a trained DiT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="the DiT export folder (or a DiT checkpoint)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompt-file", help="a text file, one prompt per line (writes one mp4 per prompt into --out)")
    parser.add_argument("--out", required=True, help="output .mp4 (one prompt) or folder (--prompt-file)")
    parser.add_argument("--num-frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale (1: off)")
    parser.add_argument("--sampler", choices=["euler", "heun", "ddim"],
                        help="default: ddim for a DiT trained with the discrete DDPM (CogVideoX), else euler")
    parser.add_argument("--shift", type=float, help="a fixed timestep shift (default: the export's, from the "
                                                    "clip's spatial and temporal tokens, capped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", help="first frame (image-to-video)")
    parser.add_argument("--video", help="a clip to extend, edit or connect from")
    parser.add_argument("--video-end", help="with --mode connect: go from --video's last frame to this clip's first "
                                            "(without it: from --video's first frame to its last)")
    parser.add_argument("--mode", choices=["extend", "extend-backward", "edit", "connect"], default="extend")
    parser.add_argument("--given", type=int, default=1, help="latent frames of --video kept when extending (default 1)")
    parser.add_argument("--strength", type=float, default=0.7, help="--mode edit: how much to change (0..1)")
    parser.add_argument("--fit-end-steps", type=int, default=50,
                        help="--mode connect: steps fitting the last latent frame through the VAE's decoder so the "
                             "video ends on the given frame (0: the encoded end frame as it is)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (with --devices N: ranks take cuda:0..N-1)")
    parser.add_argument("--devices", type=int, default=1,
                        help="processes sampling each clip together with sequence parallelism (its tokens split "
                             "over them; gloo on cpu, NCCL on cuda); must divide the DiT's num_heads (default 1)")
    parser.add_argument("--upsample-prompt", action="store_true", help="rewrite each prompt as a long caption first")
    parser.add_argument("--upsampler", default="runs/captioner/quickstart/export",
                        help="--upsample-prompt: a captioner export/checkpoint or a local causal LM folder")


def _fit(frames, height: int, width: int):
    """(T, H, W, 3) uint8 -> (1, 3, T, height, width) float in [-1, 1]: resize to cover, centre crop."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float()  # c t h w
    h, w = x.shape[2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return (x[:, :, top: top + height, left: left + width] / 127.5 - 1).clamp(-1, 1)[None]


def _read_video(path: str):
    from videogen.data.decode import PyAVDecoder

    data = Path(path).read_bytes()
    decoder = PyAVDecoder()
    return decoder.decode(data, list(range(decoder.probe(data).num_frames)))


def _read_image(path: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))[None]


def sample_videos(args: argparse.Namespace, prompts: list[str], shard=None):
    """The generated videos, (B, 3, T, H, W) in [-1, 1], one per prompt; with ``shard`` (a
    :class:`~videogen.parallel.sequence.UlyssesShard`) this rank holds its share of every clip's tokens."""
    import torch

    from videogen.encoding import normalize_latents, encode_latents
    from videogen.models.latent_grid import LatentGrid
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import (conditioning_from_video, connect_frames, generate,
                                          load_trained_dit, sampling_kwargs)

    trained = load_trained_dit(args.ckpt)
    stats = trained.stats
    device = torch.device(args.device)
    dit, vae = trained.dit.to(device), trained.vae_export.module.to(device)
    if shard is not None:
        from videogen.parallel.sequence import apply_sequence_parallel

        apply_sequence_parallel(dit, shard)
    text_encoder = trained.text_encoder.to(device)
    text, mask = text_encoder(prompts)
    null_text, null_mask = text_encoder([NULL_CAPTION])
    grid = LatentGrid.from_stats(stats)
    latent_frames = grid.latent_frames(args.num_frames)
    cond, init = None, None
    n = len(prompts)
    if stats.get("image_encoder"):  # Wan 2.1 image-to-video: its own conditioning (WanImageToVideoPipeline's)
        return _sample_wan_i2v(args, trained, dit, vae, text.to(device), mask.to(device), null_text.to(device),
                               null_mask.to(device), latent_frames)
    if args.image or args.video:
        if not stats.get("frame_conditioning") and (args.image or args.mode != "edit"):
            raise ValueError("this DiT was trained without frame conditioning: only text prompts and --mode edit work")
        frames = _read_image(args.image) if args.image else _read_video(args.video)
        clip = _fit(frames, args.height, args.width).to(device)
        usable = grid.usable_frames(clip.shape[2])
        clip = clip[:, :, :usable] if args.mode != "extend-backward" else clip[:, :, clip.shape[2] - usable:]
        if args.image:
            cond = conditioning_from_video(vae, stats, clip, "image", latent_frames)
        elif args.mode == "edit":
            init = normalize_latents(encode_latents(vae, _fit(frames[: args.num_frames], args.height, args.width)
                                                    .to(device)[:, :, :args.num_frames]), stats)
            if init.shape[2] != latent_frames:
                raise ValueError(f"--mode edit needs a clip of at least {args.num_frames} frames")
        elif args.mode == "connect" and args.video_end:  # the last frame of one clip to the first of the next
            end = _fit(_read_video(args.video_end), args.height, args.width).to(device)
            cond = connect_frames(vae, stats, clip[:, :, -1:], end[:, :, :1], latent_frames)
        else:
            cond = conditioning_from_video(vae, stats, clip, args.mode, latent_frames, given=args.given)
        if cond is not None:
            cond = cond.expand(n)
        if init is not None:
            init = init.expand(n, *init.shape[1:])
    return generate(dit, vae, stats, text.to(device), mask.to(device), null_text.to(device), null_mask.to(device),
                    num_frames=args.num_frames, height=args.height, width=args.width, steps=args.steps, cfg=args.cfg,
                    seed=args.seed, sampler=args.sampler,
                    **{**sampling_kwargs(stats), **({"shift": args.shift} if args.shift is not None else {})},
                    cond=cond, init=init, strength=args.strength if init is not None else 1.0,
                    fit_end_steps=args.fit_end_steps)


def _sample_wan_i2v(args: argparse.Namespace, trained, dit, vae, text, mask, null_text, null_mask, latent_frames: int):
    """A Wan i2v export: --image's CLIP tokens and the latents of [image, zero frames...] condition every
    step (as WanImageToVideoPipeline does); the image's own latent is kept as latent frame 0."""
    from videogen.models.dit.image_encoder import FrozenImageEncoder
    from videogen.pipelines.video import generate, sampling_kwargs, wan_image_condition

    stats = trained.stats
    if not args.image or args.video:
        raise ValueError("this DiT is Wan image-to-video: give the first frame with --image (no --video)")
    device = text.device
    image = _fit(_read_image(args.image), args.height, args.width).to(device)[:, :, 0]  # (1, 3, H, W)
    cond = wan_image_condition(vae, stats, image, latent_frames)
    n = text.shape[0]
    cond = type(cond)(cond.latents.expand(n, *cond.latents.shape[1:]), cond.mask.expand(n, *cond.mask.shape[1:]))
    embeds = FrozenImageEncoder(stats["image_encoder"]).to(device)(image)
    net = {"cond": cond.latents, "cond_mask": cond.mask, "image_embeds": embeds.expand(n, *embeds.shape[1:])}
    kw = {**sampling_kwargs(stats), **({"shift": args.shift} if args.shift is not None else {})}
    return generate(dit, vae, stats, text, mask, null_text, null_mask, num_frames=args.num_frames, height=args.height,
                    width=args.width, steps=args.steps, cfg=args.cfg, seed=args.seed, sampler=args.sampler,
                    net_kwargs=net, keep=cond, **kw)


def _sample_rank(rank: int, args: argparse.Namespace, prompts: list[str], port: int, out: str) -> None:
    """One of ``--devices`` processes: join the group, sample with this rank's token share; rank 0 saves."""
    import os

    import torch
    import torch.distributed as dist

    from videogen.parallel.sequence import UlyssesShard, sequence_groups

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(rank)
        args.device = f"cuda:{rank}"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=args.devices)
    try:
        group, seq_rank, _ = sequence_groups(args.devices)
        videos = sample_videos(args, prompts, UlyssesShard(group, seq_rank, args.devices))
        if rank == 0:
            torch.save(videos.cpu(), out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def sample_parallel(args: argparse.Namespace, prompts: list[str]):
    """:func:`sample_videos` in ``args.devices`` processes of one sequence group; rank 0's videos."""
    import socket
    import tempfile

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "videos.pt")
        try:
            mp.spawn(_sample_rank, args=(args, prompts, port, out), nprocs=args.devices, join=True)
        except mp.ProcessRaisedException as e:  # a rank's ValueError etc.: its last line, as one message
            raise ValueError(str(e).strip().splitlines()[-1]) from None
        return torch.load(out, weights_only=True)


def write_mp4(path: Path, video, fps: int) -> None:
    """(3, T, H, W) in [-1, 1] -> an H.264 mp4."""
    from videogen.data.media import encode_mp4

    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(frames, fps))


def run(args: argparse.Namespace) -> int:
    if args.prompt_file:
        prompts = [p.strip() for p in Path(args.prompt_file).read_text(encoding="utf-8").splitlines() if p.strip()]
        if not prompts:
            print(f"videogen sample: {args.prompt_file} has no prompts")
            return 2
    else:
        prompts = [args.prompt]
    try:
        if args.upsample_prompt:  # short prompt -> a caption in the style the DiT was trained on
            from videogen.pipelines.captioning import upsample_with

            prompts = upsample_with(args.upsampler, prompts, device=args.device)
            print("\n".join(f"upsampled prompt: {p}" for p in prompts))
        if args.devices < 1:
            raise ValueError(f"--devices {args.devices}: must be >= 1")
        if args.fit_end_steps < 0:
            raise ValueError(f"--fit-end-steps {args.fit_end_steps}: must be >= 0")
        videos = sample_videos(args, prompts) if args.devices == 1 else sample_parallel(args, prompts)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"videogen sample: {e}")
        return 2
    out = Path(args.out)
    paths = [out] if args.prompt else [
        out / f"{i:03d}_{re.sub(r'[^a-z0-9]+', '-', p.lower()).strip('-')[:40]}.mp4" for i, p in enumerate(prompts)]
    for path, video in zip(paths, videos):
        write_mp4(path, video, args.fps)
        print(f"wrote {path} ({video.shape[1]} frames, {video.shape[3]}x{video.shape[2]}, {args.fps} fps)")
    return 0
