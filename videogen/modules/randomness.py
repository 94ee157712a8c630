"""Randomness that a resumed run replays exactly: generators seeded by (seed, step, rank).

Lightning does not restore torch's global RNG on resume; noise drawn from these generators does
not depend on it, so the steps after a resume see exactly the noise an uninterrupted run saw.
"""

from __future__ import annotations

import torch


def step_generator(device: torch.device, step: int, rank: int) -> torch.Generator:
    seed = (torch.initial_seed() + 1_000_003 * int(step) + 7919 * int(rank)) % 2**63
    return torch.Generator(device).manual_seed(seed)
