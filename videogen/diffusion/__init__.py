"""Parameter-free, network-agnostic diffusion math: processes, timesteps, samplers, guidance."""

from videogen.diffusion.ddpm import DDPM
from videogen.diffusion.flow import RectifiedFlow
from videogen.diffusion.guidance import classifier_free_guidance, guided
from videogen.diffusion.samplers import euler, heun
from videogen.diffusion.timesteps import logit_normal, sampling_timesteps, shift_timesteps, timestep_shift

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
    "timestep_shift",
    "make_process",
    "PROCESS_NAMES",
]


PROCESS_NAMES = ("rectified_flow", "ddpm")


def make_process(name: str):
    """The process a DiT is trained with, by the name its export records: ``rectified_flow`` (velocity
    target) or ``ddpm`` (variance preserving, v-prediction, zero terminal SNR)."""
    if name == "rectified_flow":
        return RectifiedFlow()
    if name == "ddpm":
        return DDPM("v", zero_terminal_snr=True)
    raise ValueError(f"unknown diffusion process {name!r}: use one of {', '.join(PROCESS_NAMES)}")
