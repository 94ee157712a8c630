"""Parameter-free, network-agnostic diffusion math: processes, timesteps, samplers, guidance."""

from videogen.diffusion.ddpm import DDPM
from videogen.diffusion.flow import RectifiedFlow
from videogen.diffusion.guidance import classifier_free_guidance, guided
from videogen.diffusion.samplers import euler, heun
from videogen.diffusion.timesteps import logit_normal, sampling_timesteps, shift_timesteps, token_shift

__all__ = [
    "DDPM",
    "RectifiedFlow",
    "classifier_free_guidance",
    "euler",
    "guided",
    "heun",
    "logit_normal",
    "sampling_timesteps",
    "shift_timesteps",
    "token_shift",
]
