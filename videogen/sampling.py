"""Text -> video with a trained DiT: the one sampling path (validation samples and `videogen sample`).

    prompts --text encoder--> tokens ──┐
    noise (B, C, t, h, w) ──Euler/Heun over rectified-flow velocity, classifier-free guidance──▶ z
    z --denormalise (VAE stats)--> VAE decode --> videos (B, 3, T, H, W) in [-1, 1]

Per-frame conditioning (a DiT built with ``frame_conditioning=True``): clean latents of given frames
and a mask; the given frames are put back exactly at the end. Modes build the mask:

* ``image``: frame 0 given (image-to-video),
* ``extend``: the first ``k`` latent frames given (continue a clip forward),
* ``extend-backward``: the last ``k`` latent frames given,
* ``connect``: the first and last latent frames given (fill the gap between two clips),
* ``edit``: no mask; SDEdit starts from the noised clip at ``strength`` instead of pure noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from videogen.diffusion import euler, heun, sampling_timesteps, token_shift
from videogen.encoding import decode_latents, denormalize_latents, encode_latents, normalize_latents

SAMPLERS = {"euler": euler, "heun": heun}
MODES = ("text", "image", "extend", "extend-backward", "connect", "edit")


@dataclass
class Conditioning:
    """Clean normalised latents (B, C, t, h, w) and a mask (B, 1, t, h, w), 1 where given."""

    latents: Tensor
    mask: Tensor


def frame_mask(mode: str, latent_frames: int, given: int = 1) -> Tensor:
    """(t,) float mask of the latent frames a mode gives."""
    m = torch.zeros(latent_frames)
    if mode in ("image",):
        m[0] = 1
    elif mode == "extend":
        m[: max(1, given)] = 1
    elif mode == "extend-backward":
        m[-max(1, given):] = 1
    elif mode == "connect":
        m[0] = m[-1] = 1
    elif mode not in ("text", "edit"):
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return m


def conditioning_from_video(vae, stats: dict[str, Any], video: Tensor, mode: str, latent_frames: int,
                            given: int = 1) -> Conditioning:
    """Encode a clip (B, 3, T, H, W) in [-1, 1] and keep the frames the mode gives (fitting the target length).
    ``connect`` joins the clip's first and last frames (see :func:`connect_frames`)."""
    if mode == "connect":
        return connect_frames(vae, stats, video[:, :, :1], video[:, :, -1:], latent_frames)
    z = normalize_latents(encode_latents(vae, video), stats)  # (B, C, t', h, w)
    out = torch.zeros((*z.shape[:2], latent_frames, *z.shape[3:]), dtype=z.dtype, device=z.device)
    m = frame_mask(mode, latent_frames, given)
    n = min(z.shape[2], int(m.sum()))
    if mode in ("image", "extend"):
        out[:, :, :n] = z[:, :, :n]
    elif mode == "extend-backward":
        out[:, :, latent_frames - n:] = z[:, :, z.shape[2] - n:]
    mask = m.to(z.device).view(1, 1, -1, 1, 1).expand(z.shape[0], 1, latent_frames, *z.shape[3:])
    return Conditioning(out, mask.to(z.dtype))


def connect_frames(vae, stats: dict[str, Any], start: Tensor, end: Tensor, latent_frames: int) -> Conditioning:
    """Given first and last latent frames from two single frames (B, 3, 1, H, W): each is encoded on
    its own, as the image it is (an image is a 1-frame video), and the frames between are generated."""
    z_start = normalize_latents(encode_latents(vae, start), stats)  # (B, C, 1, h, w)
    z_end = normalize_latents(encode_latents(vae, end), stats)
    out = torch.zeros((*z_start.shape[:2], latent_frames, *z_start.shape[3:]), dtype=z_start.dtype,
                      device=z_start.device)
    out[:, :, :1], out[:, :, -1:] = z_start, z_end
    m = frame_mask("connect", latent_frames).to(out.device)
    mask = m.view(1, 1, -1, 1, 1).expand(out.shape[0], 1, latent_frames, *out.shape[3:])
    return Conditioning(out, mask.to(out.dtype))


@torch.no_grad()
def generate(dit, vae, stats: dict[str, Any], text: Tensor, text_mask: Tensor, *, num_frames: int, height: int,
             width: int, steps: int = 30, cfg: float = 4.0, seed: int = 0, sampler: str = "euler",
             shift_base_tokens: int | None = 256, cond: Conditioning | None = None, init: Tensor | None = None,
             strength: float = 1.0, callback: Callable | None = None) -> Tensor:
    """Sample videos for encoded prompts ``text`` (B, L, D) / ``text_mask`` (B, L): (B, 3, T, H, W) in [-1, 1].

    ``init`` (normalised latents) with ``strength`` < 1 starts from the noised clip (SDEdit).
    """
    tc, sc = stats["temporal_compression"], stats["spatial_compression"]
    if (num_frames - 1) % tc or height % sc or width % sc:
        raise ValueError(f"--num-frames must be 1 + k*{tc} and --height/--width multiples of {sc} for this VAE "
                         f"(got {num_frames} frames at {height}x{width})")
    pt, ph, pw = dit.patch_size
    shape = (text.shape[0], stats["latent_channels"], 1 + (num_frames - 1) // tc, height // sc, width // sc)
    if shape[2] % pt or shape[3] % ph or shape[4] % pw:
        raise ValueError(f"latents {shape[2:]} are not divisible by the DiT's patch size {dit.patch_size}: choose "
                         f"--height/--width multiples of {sc * max(ph, pw)}")
    device = text.device
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(shape, generator=generator, device=device)
    tokens = shape[2] // pt * (shape[3] // ph) * (shape[4] // pw)
    shift = token_shift(tokens, shift_base_tokens) if shift_base_tokens else 1.0
    start = strength if init is not None else 1.0
    timesteps = sampling_timesteps(steps, shift=shift, start=start, device=device)
    x = noise if init is None else (1 - timesteps[0]) * init + timesteps[0] * noise
    null_text, null_mask = torch.zeros_like(text), torch.zeros_like(text_mask)
    kw = {} if cond is None else {"cond": torch.cat([cond.latents, cond.latents]),
                                  "cond_mask": torch.cat([cond.mask, cond.mask])}

    def velocity(xt: Tensor, t: Tensor) -> Tensor:
        if cfg == 1.0:
            half = {} if cond is None else {"cond": cond.latents, "cond_mask": cond.mask}
            return dit(xt, t, text, text_mask, **half)
        out = dit(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([text, null_text]),
                  torch.cat([text_mask, null_mask]), **kw)
        c, u = out.chunk(2)
        return u + cfg * (c - u)

    z = SAMPLERS[sampler](velocity, x, timesteps, callback)
    if cond is not None:  # the given frames exactly as given
        z = torch.where(cond.mask.bool().expand_as(z), cond.latents, z)
    return decode_latents(vae, denormalize_latents(z, stats))
