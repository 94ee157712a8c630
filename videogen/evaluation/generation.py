"""Videos from a DiT export (or checkpoint) for evaluation: batched, prompt i always sampled with
seed ``seed + i`` (the same video whatever the batch size, and the one ``videogen sample --seed``
gives for that prompt alone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class Generator:
    dit: Any
    vae: Any
    stats: dict[str, Any]
    text_encoder: Any
    device: torch.device
    step: int | None  # the checkpoint's global step (None for an export folder)
    vae_export: Any = None


def load_generator(path: str, device: str = "cpu") -> Generator:
    """The DiT at ``path`` with the VAE and text encoder its export names (a changed VAE is refused)."""
    from videogen.pipelines.video import load_trained_dit

    trained = load_trained_dit(path)
    dev = torch.device(device)
    return Generator(trained.dit.to(dev).eval(), trained.vae_export.module.to(dev).eval(), trained.stats,
                     trained.text_encoder.to(dev), dev, trained.step, trained.vae_export)


@torch.no_grad()
def generate_videos(gen: Generator, prompts: Sequence[str], *, num_frames: int, height: int, width: int,
                    steps: int = 30, cfg: float = 4.0, sampler: str | None = None, seed: int = 0, batch_size: int = 8,
                    progress: bool = True) -> list[torch.Tensor]:
    """One (3, T, H, W) video in [-1, 1] (on the CPU) per prompt."""
    from tqdm import tqdm

    from videogen.pipelines.video import generate, sampling_kwargs
    from videogen.text_encoding import NULL_CAPTION

    null_text, null_mask = gen.text_encoder([NULL_CAPTION])  # the unconditional input caption dropout trained
    out: list[torch.Tensor] = []
    with tqdm(total=len(prompts), unit="video", desc="sampling", disable=not progress or None) as bar:
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i: i + batch_size])
            text, mask = gen.text_encoder(chunk)
            videos = generate(gen.dit, gen.vae, gen.stats, text.to(gen.device), mask.to(gen.device),
                              null_text.to(gen.device), null_mask.to(gen.device), num_frames=num_frames,
                              height=height, width=width, steps=steps, cfg=cfg,
                              seed=[seed + i + j for j in range(len(chunk))], sampler=sampler,
                              **sampling_kwargs(gen.stats))
            out.extend(videos.float().cpu())
            bar.update(len(chunk))
    return out
