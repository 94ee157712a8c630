"""Text -> video with a trained DiT: the one sampling path (validation samples and `videogen sample`).

    prompts --text encoder--> tokens ──┐        (the null branch: the encoded NULL_CAPTION)
    noise (B, C, t, h, w) ──Euler/Heun over the process's ODE velocity, classifier-free guidance──▶ z
    z --denormalise (VAE stats)--> VAE decode --> videos (B, 3, T, H, W) in [-1, 1]

The process (rectified flow or DDPM, ``process`` in the export) and the timestep shift
(:func:`videogen.diffusion.timestep_shift` with the export's ``shift_base_tokens``/``shift_max``, or a
fixed ``shift``) are the ones training used. Classifier-free guidance's unconditional branch is the
encoded :data:`~videogen.text_encoding.NULL_CAPTION`, exactly what caption dropout trains on.

Per-frame conditioning (a DiT built with ``frame_conditioning=True``): clean latents of given frames
and a mask. Training noises the given frames like the rest, ``x_t = add_noise(cond, noise, t)``, and
feeds the clean latents in the conditioning channels; at every sampler step the given frames of the
state are set to that same point of their path (their velocity is the path's own), so the network sees
what it saw in training, and they end exactly as given. Given frames are encoded in their place in a
clip-length video (the causal VAE's latent of a frame depends on the frames before it), as training
encodes the clip. Modes build the mask:

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

from videogen.diffusion import euler, guided, heun, make_process, sampling_timesteps, timestep_shift
from videogen.diffusion.discrete import DiscreteDDPM, trailing_timesteps
from videogen.diffusion.samplers import ddim
from videogen.diffusion.timesteps import dynamic_shift as dynamic_shift_of
from videogen.diffusion.timesteps import flow_match_timesteps, stretch_to_terminal
from videogen.encoding import decode_latents, decode_plan, denormalize_latents, encode_latents, normalize_latents
from videogen.models.latent_grid import LatentGrid
from videogen.text_encoding import NULL_CAPTION

SAMPLERS = {"euler": euler, "heun": heun}  # and "ddim" for the discrete DDPM (CogVideoX)
MODES = ("text", "image", "extend", "extend-backward", "connect", "edit")


@dataclass
class Conditioning:
    """Clean normalised latents (B, C, t, h, w) and a mask (B, 1, t, h, w), 1 where given; ``end_frame``
    (B, 3, H, W) in [-1, 1]: the frame the video must end on (``connect``), kept by :func:`fit_end_latent`."""

    latents: Tensor
    mask: Tensor
    end_frame: Tensor | None = None

    def expand(self, n: int) -> "Conditioning":
        """The same conditioning for ``n`` videos (from one row)."""
        def rows(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.expand(n, *x.shape[1:])
        return Conditioning(rows(self.latents), rows(self.mask), rows(self.end_frame))


@dataclass
class TrainedDiT:
    """A DiT export with the VAE export it was trained on and its frozen text encoder (on the CPU)."""

    dit: Any
    vae_export: Any
    stats: dict[str, Any]
    text_encoder: Any
    step: int | None  # the checkpoint's global step (None for an export folder)


def load_trained_dit(path: str, vae: str | None = None) -> TrainedDiT:
    """The DiT at ``path`` (export or checkpoint) with the VAE its export names (or ``vae``) and its text
    encoder; a VAE whose weights are not the ones the DiT was trained with is refused."""
    from videogen.encoding import check_same_vae, load_vae
    from videogen.models.dit import DiT
    from videogen.models.dit.diffusers_adapters import DiffusersTransformer
    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import load_stage

    export = load_stage(path, expect=(DiT, DiffusersTransformer))
    stats = export.stats
    source = vae or stats["vae"]["source"]
    vae_export = load_vae(source)
    check_same_vae(stats["vae"], vae_export, f"the DiT at {path} was trained with",
                   "restore that VAE (or give it with --vae), or train the DiT again")
    text_encoder = FrozenTextEncoder(stats["text_encoder"], stats["text_max_length"],
                                     attend_padding=getattr(export.module, "text_attends_padding", False),
                                     layer=stats.get("text_layer", -1))  # checked there: an int in range
    return TrainedDiT(export.module, vae_export, stats, text_encoder,
                      export.manifest.get("inputs", {}).get("global_step"))


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


def _encode_in_place(vae, stats: dict[str, Any], clip: Tensor, mode: str, latent_frames: int,
                     given: int = 1) -> Conditioning:
    """Encode a clip-length video (B, 3, T, H, W) whole, as training encodes a clip, and keep the mode's frames."""
    z = normalize_latents(encode_latents(vae, clip), stats)  # (B, C, latent_frames, h, w)
    if z.shape[2] != latent_frames:
        raise ValueError(f"a {clip.shape[2]}-frame clip encodes to {z.shape[2]} latent frames, not {latent_frames}")
    m = frame_mask(mode, latent_frames, given).to(z.device)
    mask = m.view(1, 1, -1, 1, 1).expand(z.shape[0], 1, latent_frames, *z.shape[3:]).to(z.dtype)
    return Conditioning(z * mask, mask)


def _hold(frames: Tensor, length: int, at_end: bool) -> Tensor:
    """``frames`` (B, 3, k, H, W) padded to ``length`` frames by repeating its first (at_end) or last frame."""
    if frames.shape[2] >= length:
        return frames[:, :, frames.shape[2] - length:] if at_end else frames[:, :, :length]
    pad = (frames[:, :, :1] if at_end else frames[:, :, -1:]).expand(-1, -1, length - frames.shape[2], -1, -1)
    return torch.cat([pad, frames] if at_end else [frames, pad], dim=2)


def conditioning_from_video(vae, stats: dict[str, Any], video: Tensor, mode: str, latent_frames: int,
                            given: int = 1) -> Conditioning:
    """The given latents of a clip (B, 3, T', H, W) in [-1, 1] for a mode, encoded in their place in a
    clip of ``latent_frames``: ``image``/``extend`` take its first frames, ``extend-backward`` its last
    (the clip-length stretch before them too: the causal latents depend on it), ``connect`` its first
    frame and its last frames (:func:`connect_frames`). A clip of exactly the target length gives
    bitwise the latents training gives it; a shorter one is held at its last (first) frame."""
    length = LatentGrid.from_stats(stats).frames_for(latent_frames)
    if mode == "connect":
        return connect_frames(vae, stats, video[:, :, :1], video[:, :, 1:] if video.shape[2] > 1 else video,
                              latent_frames)
    if mode == "image":
        video = video[:, :, :1]
    return _encode_in_place(vae, stats, _hold(video, length, at_end=mode == "extend-backward"), mode,
                            latent_frames, given)


def connect_frames(vae, stats: dict[str, Any], start: Tensor, end: Tensor, latent_frames: int) -> Conditioning:
    """Given first and last latent frames: ``start`` (B, 3, 1, H, W) is frame 0, ``end`` (B, 3, k, H, W) the
    clip's last frames (its last frame last; fewer than a clip's length are held at their first frame);
    the clip-length video ``[start, end...]`` is encoded whole and its first and last latents kept."""
    length = LatentGrid.from_stats(stats).frames_for(latent_frames)
    clip = torch.cat([start[:, :, :1], _hold(end, length - 1, at_end=True)], dim=2)
    cond = _encode_in_place(vae, stats, clip, "connect", latent_frames)
    return Conditioning(cond.latents, cond.mask, end_frame=end[:, :, -1])


def fit_end_latent(vae, stats: dict[str, Any], z: Tensor, end_frame: Tensor, steps: int = 50, lr: float = 0.05,
                   memory_budget_gb: float | None = None) -> Tensor:
    """Normalised latents ``z`` (B, C, t, h, w) with the last latent frame fitted so that the decoded video's last
    frame is ``end_frame`` (B, 3, H, W) in [-1, 1]: ``steps`` of Adam on the mean squared pixel error.

    The causal VAE cannot encode a lone end frame into a last-position latent that decodes back to it: that
    latent holds the clip's last ``tc`` frames and is decoded after the frames before it. On the quickstart the
    held-end latent :func:`connect_frames` gives decodes to 25.88 dB after the sampled middle, and even the clip's
    real latents only to 27.44 dB (the VAE's own reconstruction); fitted, 31.96 dB (benchmarks/RESULTS.md, issue 14,
    session 13). The frames before the last latent are decoded once (``vae.tail_decoder``: our VAE keeps its causal
    caches after them and decodes only the last latent frame at each step, tiled from the memory budget; a
    diffusers VAE decodes the whole clip again at each step), the graph kept through the last latent only (the
    VAE's weights are frozen for the fit and their flags restored)."""
    plan = decode_plan(vae, z, memory_budget_gb)
    decode_tail = vae.tail_decoder(denormalize_latents(z[:, :, :-1].float(), stats), plan.tile, plan.tile_overlap)
    last = z[:, :, -1:].detach().clone().float().requires_grad_(True)
    target = end_frame.to(z.device, torch.float32)
    optimizer = torch.optim.Adam([last], lr=lr)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    try:
        vae.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(steps):
                loss = (decode_tail(denormalize_latents(last, stats))[:, :, -1] - target).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return torch.cat([z[:, :, :-1], last.detach().to(z.dtype)], dim=2)


def wan_image_condition(vae, stats: dict[str, Any], image: Tensor, latent_frames: int) -> Conditioning:
    """Wan 2.1 image-to-video's conditioning of ``image`` (B, 3, H, W) in [-1, 1], as
    ``WanImageToVideoPipeline.prepare_latents`` builds it: the clip ``[image, zero frames...]`` of
    ``latent_frames`` latent frames encoded whole and normalised (all its latents, not only frame 0's), and a
    mask of latent frame 0 (the transformer widens it to its mask channels)."""
    frames = LatentGrid.from_stats(stats).frames_for(latent_frames)
    clip = torch.cat([image[:, :, None], image.new_zeros(image.shape[0], 3, frames - 1, *image.shape[2:])], dim=2)
    z = normalize_latents(encode_latents(vae, clip), stats)  # (B, C, latent_frames, h, w)
    mask = torch.zeros(z.shape[0], 1, latent_frames, *z.shape[3:], device=z.device, dtype=z.dtype)
    mask[:, :, 0] = 1
    return Conditioning(z, mask)


def sampling_kwargs(stats: dict[str, Any]) -> dict[str, Any]:
    """The process, shift and timestep spacing a DiT export records (older exports: rectified flow,
    uncapped token-count shift, linear spacing)."""
    out = {"process": stats.get("process", "rectified_flow"), "shift_base_tokens": stats.get("shift_base_tokens"),
           "shift_max": stats.get("shift_max")}
    if stats.get("shift") is not None:
        out["shift"] = stats["shift"]
    if stats.get("timestep_spacing", "linear") != "linear":
        out["spacing"] = stats["timestep_spacing"]
    if stats.get("dynamic_shift"):
        out["dynamic_shift"] = tuple(stats["dynamic_shift"])
    if stats.get("shift_terminal") is not None:
        out["shift_terminal"] = stats["shift_terminal"]
    if stats.get("snr_shift_scale") is not None:
        out["snr_shift_scale"] = stats["snr_shift_scale"]
    return out


@torch.no_grad()
def generate(dit, vae, stats: dict[str, Any], text: Tensor, text_mask: Tensor, null_text: Tensor | None = None,
             null_mask: Tensor | None = None, *, num_frames: int, height: int, width: int, steps: int = 30,
             cfg: float = 4.0, seed: int | list[int] = 0, sampler: str | None = None, process: str = "rectified_flow",
             shift_base_tokens: int | None = 256, shift_max: float | None = 5.0, shift: float | None = None,
             cond: Conditioning | None = None, init: Tensor | None = None, strength: float = 1.0,
             callback: Callable | None = None, spacing: str = "linear", noise: Tensor | None = None,
             net_kwargs: dict[str, Any] | None = None, snr_shift_scale: float = 3.0,
             keep: Conditioning | None = None, dynamic_shift: tuple[float, ...] | None = None,
             shift_terminal: float | None = None, fit_end_steps: int = 50) -> Tensor:
    """Sample videos for encoded prompts ``text`` (B, L, D) / ``text_mask`` (B, L): (B, 3, T, H, W) in [-1, 1]:
    :func:`generate_latents`, denormalised with the VAE's statistics and decoded. A ``cond`` with an ``end_frame``
    (``connect``) has its last latent fitted to it first (:func:`fit_end_latent`, ``fit_end_steps``; 0: not fitted)."""
    z = generate_latents(dit, stats, text, text_mask, null_text, null_mask, num_frames=num_frames, height=height,
                         width=width, steps=steps, cfg=cfg, seed=seed, sampler=sampler, process=process,
                         shift_base_tokens=shift_base_tokens, shift_max=shift_max, shift=shift, cond=cond, init=init,
                         strength=strength, callback=callback, spacing=spacing, noise=noise, net_kwargs=net_kwargs,
                         snr_shift_scale=snr_shift_scale, keep=keep, dynamic_shift=dynamic_shift,
                         shift_terminal=shift_terminal)
    if cond is not None and cond.end_frame is not None and fit_end_steps > 0:
        z = fit_end_latent(vae, stats, z, cond.end_frame, fit_end_steps)
    return decode_latents(vae, denormalize_latents(z, stats))


@torch.no_grad()
def generate_latents(dit, stats: dict[str, Any], text: Tensor, text_mask: Tensor, null_text: Tensor | None = None,
                     null_mask: Tensor | None = None, *, num_frames: int, height: int, width: int, steps: int = 30,
                     cfg: float = 4.0, seed: int | list[int] = 0, sampler: str | None = None,
                     process: str = "rectified_flow", shift_base_tokens: int | None = 256,
                     shift_max: float | None = 5.0, shift: float | None = None, cond: Conditioning | None = None,
                     init: Tensor | None = None, strength: float = 1.0, callback: Callable | None = None,
                     spacing: str = "linear", noise: Tensor | None = None,
                     net_kwargs: dict[str, Any] | None = None, snr_shift_scale: float = 3.0,
                     keep: Conditioning | None = None, dynamic_shift: tuple[float, ...] | None = None,
                     shift_terminal: float | None = None) -> Tensor:
    """The sampled normalised latents (B, C, t, h, w) for encoded prompts (see :func:`generate`).

    ``null_text``/``null_mask`` (1 or B rows): the encoded :data:`~videogen.text_encoding.NULL_CAPTION`, needed when ``cfg`` != 1.
    ``seed``: one seed for the batch's noise, or one per video (video i then gets the noise a batch
    of one with ``seed[i]`` gets, however the prompts are batched).
    ``shift``: a fixed timestep shift instead of the trained one. ``init`` (normalised latents) with
    ``strength`` < 1 starts from the noised clip (SDEdit). ``spacing``: ``linear`` (the shifted linear
    schedule) or ``flow_match`` (diffusers' ``FlowMatchEulerDiscreteScheduler`` sigmas, what Wan and LTX
    are sampled with; text-to-video only) or ``trailing`` (diffusers' trailing DDIM timesteps, CogVideoX's).
    ``sampler``: euler, heun, or ddim (the discrete DDPM's); None: ddim for the discrete DDPM, else euler.
    ``noise``: the initial noise instead of ``seed``'s. ``dynamic_shift``: (base_tokens, max_tokens, base_shift,
    max_shift), the shift exp(mu) of LTX-Video (:func:`videogen.diffusion.timesteps.dynamic_shift`);
    ``shift_terminal``: the last nonzero timestep stretched to it (:func:`~videogen.diffusion.timesteps.
    stretch_to_terminal`, a scheduler config's ``shift_terminal``).
    ``net_kwargs``: extra conditioning the network takes per video (e.g. Wan i2v's ``image_embeds``),
    doubled along with the batch under guidance. ``keep``: latents put in place of the sampled ones where
    its mask is 1, at the end only (Wan i2v: the network generates frame 0 from its conditioning channels
    as its pipeline does; the image's exact latent is then kept there).
    """
    grid = LatentGrid.from_stats(stats, tuple(dit.patch_size))
    tc, sc = grid.temporal_compression, grid.spatial_compression
    if (num_frames - 1) % tc or height % sc or width % sc:
        raise ValueError(f"--num-frames must be 1 + k*{tc} and --height/--width multiples of {sc} for this VAE "
                         f"(got {num_frames} frames at {height}x{width})")
    pt, ph, pw = grid.patch
    b = text.shape[0]
    shape = (b, stats["latent_channels"], *grid.latent_shape(num_frames, height, width))
    if shape[2] % pt or shape[3] % ph or shape[4] % pw:
        raise ValueError(f"latents {shape[2:]} are not divisible by the DiT's patch size {dit.patch_size}: choose "
                         f"--height/--width multiples of {max(grid.token_shape[1:])}")
    if cfg != 1.0 and null_text is None:
        raise ValueError("classifier-free guidance (cfg != 1) needs null_text/null_mask: the encoded NULL_CAPTION")
    proc = make_process(process, snr_shift_scale)
    discrete = isinstance(proc, DiscreteDDPM)
    sampler = sampler or ("ddim" if discrete else "euler")
    if discrete != (sampler == "ddim"):
        raise ValueError(f"--sampler {sampler} does not sample the {process} process: use "
                         f"{'ddim' if discrete else 'euler or heun'}")
    if discrete and (cond is not None or init is not None):
        raise ValueError("the discrete DDPM (CogVideoX) samples text-to-video only here (no --image, --video)")
    device = text.device
    if noise is not None:
        noise = noise.to(device=text.device, dtype=torch.float32)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise of shape {tuple(noise.shape)} given for latents of shape {shape}")
    elif isinstance(seed, int):
        noise = torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device)
    else:
        noise = torch.stack([torch.randn(shape[1:], generator=torch.Generator(device).manual_seed(s), device=device)
                             for s in seed])
    if shift is None and dynamic_shift:
        shift = dynamic_shift_of(shape[2] // pt * (shape[3] // ph) * (shape[4] // pw), *dynamic_shift)
    if shift is None:
        shift = (timestep_shift(shape[2] // pt, shape[3] // ph * (shape[4] // pw), shift_base_tokens, shift_max)
                 if shift_base_tokens else 1.0)
    start = strength if init is not None else 1.0
    if spacing == "flow_match":
        if start != 1.0:
            raise ValueError("spacing 'flow_match' samples from pure noise only (no --mode edit)")
        timesteps = flow_match_timesteps(steps, shift=shift, device=device)
    elif spacing == "trailing":
        timesteps = trailing_timesteps(steps, proc.num_train_timesteps if discrete else 1000, device=device)
    elif spacing == "linear":
        timesteps = sampling_timesteps(steps, shift=shift, start=start, device=device)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}: use linear, flow_match or trailing")
    if shift_terminal is not None:
        timesteps = stretch_to_terminal(timesteps, shift_terminal)
    x = noise if init is None else proc.add_noise(init, noise, timesteps[0].expand(b))
    if cfg != 1.0:
        null_text, null_mask = null_text.expand(b, *text.shape[1:]), null_mask.expand(b, text_mask.shape[1])
    given = None if cond is None else cond.mask.bool().expand(shape)
    extra = net_kwargs or {}

    if cfg == 1.0:
        def network(xt: Tensor, t: Tensor) -> Tensor:
            half = {} if cond is None else {"cond": cond.latents, "cond_mask": cond.mask}
            return dit(xt, t, text, text_mask, **half, **extra)
    else:  # one network call per step on the doubled batch: [prompts, null captions]
        kw = {} if cond is None else {"cond": torch.cat([cond.latents, cond.latents]),
                                      "cond_mask": torch.cat([cond.mask, cond.mask])}
        kw.update({k: torch.cat([v, v]) for k, v in extra.items()})
        text2, text_mask2 = torch.cat([text, null_text]), torch.cat([text_mask, null_mask])
        network = guided(lambda xt2, t2: dit(xt2, t2, text2, text_mask2, **kw), cfg)

    def velocity(xt: Tensor, t: Tensor) -> Tensor:
        if given is None:
            return proc.velocity(network(xt, t), xt, t)
        on_path = proc.add_noise(cond.latents, noise, t)  # where training put the given frames at t
        xt = torch.where(given, on_path, xt)
        v = proc.velocity(network(xt, t), xt, t)
        return torch.where(given, proc.velocity(proc.target(cond.latents, noise, t), on_path, t), v)

    if discrete:
        z = ddim(proc)(network, x, timesteps, callback)
    else:
        z = SAMPLERS[sampler](velocity, x, timesteps, callback)
    if cond is not None:  # the given frames exactly as given
        z = torch.where(given, cond.latents, z)
    if keep is not None:
        z = torch.where(keep.mask.bool().expand(shape), keep.latents.to(z.dtype), z)
    return z
