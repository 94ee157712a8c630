"""The memory budget VAE inference plans its chunks and tiles from, and its autocast.

Every path that runs the VAE over a whole clip (sampling, validation, ``eval-vae``, ``encode``, the
DiT's on-the-fly encode) goes through :mod:`videogen.encoding`, which asks :func:`memory_budget`
for the bytes its activations may take and lets
:func:`videogen.models.vae.receptive.plan_tiles` pick chunks and tiles that fit.
"""

from __future__ import annotations

import contextlib
import os

import torch

CUDA_FREE_FRACTION = 0.5   # of the device's free memory, measured at the call
CPU_RAM_FRACTION = 0.1     # of the machine's physical RAM (the rest: the clip, its latents, the model, others)


def total_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget(device: torch.device | str, gigabytes: float | None = None) -> int:
    """Bytes VAE activations may use on ``device``: ``gigabytes`` when given (the commands'
    ``--memory-budget``), else half of the CUDA device's free memory, or a tenth of the RAM on CPU."""
    if gigabytes is not None:
        if gigabytes <= 0:
            raise ValueError(f"memory budget {gigabytes} GB: give a positive number of gigabytes")
        return int(gigabytes * 2**30)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return int(total_ram_bytes() * CPU_RAM_FRACTION)


def inference_autocast(device: torch.device | str):
    """bf16 autocast on CUDA (the VAE's convs at half the memory), nothing on CPU (fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bytes_per_element(device: torch.device | str) -> int:
    return 2 if torch.device(device).type == "cuda" else 4
