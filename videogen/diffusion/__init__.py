"""Parameter-free, network-agnostic diffusion math: processes, timesteps, samplers, guidance."""

from videogen.diffusion.ddpm import DDPM
from videogen.diffusion.discrete import DiscreteDDPM, cogvideox_alphas_cumprod
from videogen.diffusion.flow import RectifiedFlow
from videogen.diffusion.guidance import classifier_free_guidance, guided
from videogen.diffusion.samplers import euler, heun
from videogen.diffusion.timesteps import logit_normal, sampling_timesteps, shift_timesteps, timestep_shift

__all__ = [
    "DDPM",
    "DiscreteDDPM",
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


PROCESS_NAMES = ("rectified_flow", "ddpm", "ddpm_discrete")


def make_process(name: str, snr_shift_scale: float = 3.0):
    """The process a DiT is trained with, by the name its export records: ``rectified_flow`` (velocity
    target), ``ddpm`` (variance preserving, v-prediction, zero terminal SNR) or ``ddpm_discrete``
    (CogVideoX's 1000-step table with its ``snr_shift_scale``, v-prediction, zero terminal SNR)."""
    if name == "rectified_flow":
        return RectifiedFlow()
    if name == "ddpm":
        return DDPM("v", zero_terminal_snr=True)
    if name == "ddpm_discrete":
        return DiscreteDDPM(cogvideox_alphas_cumprod(snr_shift_scale))
    raise ValueError(f"unknown diffusion process {name!r}: use one of {', '.join(PROCESS_NAMES)}")
