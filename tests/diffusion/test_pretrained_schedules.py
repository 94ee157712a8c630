"""The timesteps and steps pretrained models sample with, against diffusers' schedulers: Wan's and LTX's
FlowMatchEulerDiscreteScheduler sigmas bit for bit, CogVideoX's alphas_cumprod, trailing timesteps and DDIM step."""

import pytest
import torch

from videogen.diffusion import make_process
from videogen.diffusion.discrete import trailing_timesteps
from videogen.diffusion.timesteps import flow_match_timesteps


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 4, 50])
def test_flow_match_timesteps_are_the_schedulers(shift, steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    ours = flow_match_timesteps(steps, shift)
    assert torch.equal(ours, scheduler.sigmas) and torch.equal(ours[:-1] * 1000, scheduler.timesteps)


@pytest.mark.parametrize("snr_shift_scale", [3.0, 1.0])
def test_discrete_ddpm_is_cogvideox_ddim(snr_shift_scale):
    from diffusers import CogVideoXDDIMScheduler

    scheduler = CogVideoXDDIMScheduler(snr_shift_scale=snr_shift_scale, rescale_betas_zero_snr=True,
                                       prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)
    process = make_process("ddpm_discrete", snr_shift_scale)
    assert torch.equal(process.table[1:], scheduler.alphas_cumprod.float()) and process.table[0] == 1
    for steps in (4, 10, 50):
        scheduler.set_timesteps(steps)
        t = trailing_timesteps(steps)
        assert torch.equal(process.network_timestep(t[:-1]), scheduler.timesteps) and t[-1] == 0
    scheduler.set_timesteps(4)
    t = trailing_timesteps(4)
    x, v = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    for i, k in enumerate(scheduler.timesteps):  # the last step ends at abar = 1 (set_alpha_to_one)
        theirs = scheduler.step(v, k, x, return_dict=False)[0]
        assert torch.allclose(process.ddim_step(v, x, t[i].expand(2), t[i + 1].expand(2)), theirs, atol=1e-6)
    # training: x_t and v at the snapped integer timestep
    x0, noise, tt = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.2504, 0.9])
    abar = scheduler.alphas_cumprod[torch.tensor([249, 899])].float()[:, None]
    assert torch.allclose(process.add_noise(x0, noise, tt), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    assert torch.allclose(process.target(x0, noise, tt), abar.sqrt() * noise - (1 - abar).sqrt() * x0)


def test_trailing_steps_must_divide_the_grid():
    with pytest.raises(ValueError, match="divides 1000"):
        trailing_timesteps(3)
    with pytest.raises(ValueError, match="no ODE velocity.*ddim"):
        make_process("ddpm_discrete").velocity(torch.zeros(1), torch.zeros(1), torch.ones(1))


@pytest.mark.parametrize("tokens", [288, 4096])
def test_ltx_dynamic_shift_and_terminal_are_the_pipelines(tokens):
    """LTXPipeline's sigmas: linspace(1, 1/N, N) through exp(mu) (mu from calculate_shift) and shift_terminal."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    from videogen.diffusion import sampling_timesteps
    from videogen.diffusion.timesteps import dynamic_shift, stretch_to_terminal

    for terminal in (None, 0.1):
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                    base_image_seq_len=1024, max_image_seq_len=4096,
                                                    shift_terminal=terminal)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 8, 8), mu=calculate_shift(tokens, 1024, 4096, 0.95, 2.05))
        ours = sampling_timesteps(8, shift=dynamic_shift(tokens, 1024, 4096, 0.95, 2.05))
        ours = ours if terminal is None else stretch_to_terminal(ours, terminal)
        assert torch.allclose(ours, scheduler.sigmas, atol=1e-6), (ours, scheduler.sigmas)
