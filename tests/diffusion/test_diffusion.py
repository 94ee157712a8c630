"""Diffusion math: processes, timestep sampling and shift, Euler/Heun samplers, guidance."""

import math

import pytest
import torch

from videogen.diffusion import (
    DDPM,
    RectifiedFlow,
    classifier_free_guidance,
    euler,
    guided,
    heun,
    logit_normal,
    sampling_timesteps,
    shift_timesteps,
    timestep_shift,
)

PROCESSES = [RectifiedFlow(), DDPM("eps"), DDPM("v"), DDPM("v", zero_terminal_snr=True)]


def test_rectified_flow_convention():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 2, 4, 4, generator=g), torch.randn(3, 2, 2, 4, 4, generator=g)
    flow = RectifiedFlow()
    assert torch.equal(flow.add_noise(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(flow.add_noise(x0, noise, torch.ones(3)), noise)
    t = torch.tensor([0.2, 0.5, 0.9])
    xt = flow.add_noise(x0, noise, t)
    assert torch.allclose(xt[1], 0.5 * x0[1] + 0.5 * noise[1])
    v = flow.target(x0, noise, t)
    assert torch.allclose(flow.predict_x0(v, xt, t), x0, atol=1e-6)
    # a 0-d t broadcasts against one (C, T, H, W) clip, as in packed training
    assert torch.allclose(flow.add_noise(x0[0], noise[0], torch.tensor(0.2)), xt[0])


@pytest.mark.parametrize("process", PROCESSES, ids=["flow", "ddpm-eps", "ddpm-v", "ddpm-v-ztsnr"])
def test_velocity_of_target_is_the_path_derivative(process):
    """velocity(target) must be d xt / dt along the noising path: this is what the samplers integrate."""
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 3, 5, generator=g, dtype=torch.float64), torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.95], dtype=torch.float64)
    xt = process.add_noise(x0, noise, t)
    pred = process.target(x0, noise, t)
    h = 1e-6
    finite_diff = (process.add_noise(x0, noise, t + h) - process.add_noise(x0, noise, t - h)) / (2 * h)
    assert torch.allclose(process.velocity(pred, xt, t), finite_diff, atol=1e-6)
    assert torch.allclose(process.predict_x0(pred, xt, t), x0, atol=1e-8)


def test_ddpm_schedule_matches_discrete_ddpm():
    ddpm = DDPM()
    alpha, sigma = ddpm.alpha_sigma(torch.linspace(0, 1, 11, dtype=torch.float64))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(11, dtype=torch.float64))
    assert alpha[0] == 1 and sigma[0] == 0 and torch.all(alpha[1:] < alpha[:-1])
    # the discrete DDPM (betas 1e-4..0.02, 1000 steps) has alpha_bar_T = prod(1 - beta) -> sqrt ~ 0.0064
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert alpha[-1].item() == pytest.approx(torch.cumprod(1 - betas, 0)[-1].sqrt().item(), rel=0.05)
    with pytest.raises(ValueError, match="prediction"):
        DDPM("x0")


def test_logit_normal_sampling():
    t = logit_normal(20000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.min() > 0 and t.max() < 1
    assert t.median().item() == pytest.approx(0.5, abs=0.02)
    shifted = logit_normal(20000, mean=1.0, generator=torch.Generator().manual_seed(0))
    assert shifted.median().item() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.02)
    again = logit_normal(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, logit_normal(5, generator=torch.Generator().manual_seed(3)))


def test_shift_is_monotonic_and_fixes_endpoints():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    previous = t
    for s in [1.0, 1.5, 3.0, 10.0]:
        ts = shift_timesteps(t, s)
        assert ts[0] == 0 and ts[-1] == 1
        assert torch.all(ts[1:] > ts[:-1])  # increasing in t
        assert torch.all(ts[1:-1] >= previous[1:-1])  # increasing in s
        previous = ts
    assert torch.equal(shift_timesteps(t, 1.0), t)
    assert shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)


def test_timestep_shift_grows_with_spatial_and_temporal_tokens_up_to_the_cap():
    assert timestep_shift(1, 256) == 1.0
    assert timestep_shift(4, 256) == 2.0 and timestep_shift(1, 1024) == 2.0  # 4x the frames or the area -> s = 2
    image, clip, long_clip = timestep_shift(1, 32 * 32), timestep_shift(5, 32 * 32), timestep_shift(13, 32 * 32)
    assert image < clip < long_clip
    # 720p x 33 frames (9 latent frames of 45 x 80 tokens): 11.25 uncapped, Wan's 5.0 with the cap
    assert timestep_shift(9, 45 * 80, max_shift=None) == pytest.approx(11.25)
    assert timestep_shift(9, 45 * 80) == 5.0
    # the quickstart's 9 x 64 x 96 bucket (5 latent frames of 8 x 12 tokens) is far below the cap
    assert timestep_shift(5, 8 * 12) == pytest.approx(math.sqrt(96 * 5 / 256))
    per_clip = timestep_shift(torch.tensor([1, 4, 64]), torch.tensor([256, 256, 256 * 64]))
    assert torch.allclose(per_clip, torch.tensor([1.0, 2.0, 5.0]))
    # per-clip shifts apply elementwise to per-clip timesteps
    assert torch.allclose(shift_timesteps(torch.full((3,), 0.5), per_clip), torch.tensor([0.5, 2 / 3, 5 / 6]))


def test_zero_terminal_snr_ddpm_is_pure_noise_at_t1():
    ddpm = DDPM("v", zero_terminal_snr=True)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    alpha, sigma = ddpm.alpha_sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(11, dtype=torch.float64))
    assert alpha[0] == 1 and sigma[0] == 0 and alpha[-1].abs() < 1e-12 and torch.all(alpha[1:] < alpha[:-1])
    with pytest.raises(ValueError, match="needs prediction='v'"):
        DDPM("eps", zero_terminal_snr=True)


def test_sampling_timesteps():
    ts = sampling_timesteps(8, shift=3.0)
    assert ts.shape == (9,) and ts[0] == 1 and ts[-1] == 0 and torch.all(ts[1:] < ts[:-1])
    sdedit = sampling_timesteps(4, start=0.6)
    assert sdedit[0].item() == pytest.approx(0.6)


@pytest.mark.parametrize("sampler", [euler, heun])
def test_sampler_shapes_and_callback(sampler):
    noise = torch.randn(2, 4, 3, 8, 8)
    seen = []
    out = sampler(lambda x, t: -x * t[:, None, None, None, None], noise, sampling_timesteps(5), callback=lambda i, t, x: seen.append((i, x.shape)))
    assert out.shape == noise.shape and out.dtype == noise.dtype
    assert [i for i, _ in seen] == list(range(5)) and all(s == noise.shape for _, s in seen)


@pytest.mark.parametrize("sampler", [euler, heun])
@pytest.mark.parametrize("steps", [1, 4])
def test_oracle_velocity_recovers_x0(sampler, steps):
    """With the exact velocity towards one known x0, v = (xt - x0) / t, the ODE paths are straight."""
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, 2, 6, 6, generator=g), torch.randn(2, 4, 2, 6, 6, generator=g)
    oracle = lambda xt, t: (xt - x0) / t[:, None, None, None, None]  # noqa: E731
    out = sampler(oracle, noise, sampling_timesteps(steps, shift=3.0))
    assert torch.allclose(out, x0, atol=1e-5)


def gaussian_flow_problem(mu=2.0, s=0.5):
    """Data N(mu, s^2): the rectified-flow ODE is x_t = m(t) + sd(t) z, m = (1 - t) mu, sd^2 = (1 - t)^2 s^2 + t^2."""

    def velocity(x, t):
        t = t[:, None].double()
        sd = torch.sqrt((1 - t) ** 2 * s**2 + t**2)
        return -mu + ((t - 1) * s**2 + t) / sd * (x - (1 - t) * mu) / sd

    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return velocity, z, mu + s * z


def test_heun_beats_euler_at_few_steps():
    """Measured on N(2, 0.5^2): max error Euler 4/8/16 steps 0.50/0.27/0.14, Heun 0.21/0.047/0.011."""
    velocity, z, exact = gaussian_flow_problem()

    def error(sampler, steps):
        return (sampler(velocity, z, sampling_timesteps(steps).double()) - exact).abs().max().item()

    for steps in (4, 8):
        # Heun beats Euler at the same steps, and at the same number of model calls (2 steps - 1)
        assert error(heun, steps) < error(euler, 2 * steps) < error(euler, steps)
    # second order: halving the step divides Heun's error by ~4, Euler's by ~2
    assert error(heun, 8) / error(heun, 16) > 3.5
    assert error(euler, 8) / error(euler, 16) < 2.2
    assert error(heun, 64) < 1e-3


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddpm_oracle_sampling_through_shared_samplers(prediction):
    """DDPM runs through the same samplers via process.velocity; the oracle ends near x0."""
    ddpm = DDPM(prediction)
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)

    def model_fn(xt, t):
        alpha, sigma = ddpm.alpha_sigma(t[:, None])
        eps = (xt - alpha * x0) / sigma  # the noise that explains xt given the known x0
        return ddpm.velocity(ddpm.target(x0, eps, t), xt, t)

    start = ddpm.add_noise(x0, noise, torch.ones(3, dtype=torch.float64))
    errors = [(heun(model_fn, start, torch.linspace(1, 0, n + 1, dtype=torch.float64)) - x0).abs().max() for n in (10, 50)]
    # measured 0.124 and 0.016: the VP velocity has a sqrt(t) singularity at t = 0, so the last step limits accuracy
    assert errors[1] < errors[0] / 5 and errors[1] < 0.03


def test_classifier_free_guidance():
    cond, uncond = torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)
    assert torch.equal(classifier_free_guidance(cond, uncond, 1.0), cond)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), uncond)
    assert torch.equal(classifier_free_guidance(cond, uncond, 5.0), torch.full((2, 3), 6.0))

    # guided() runs cond and uncond in one doubled batch: first half conditioned, second not
    label = torch.tensor([1.0, 1.0, 0.0, 0.0])[:, None]
    calls = []

    def doubled(x, t):
        calls.append(x.shape[0])
        return x * (1 + label) + t[:, None]

    x, t = torch.randn(2, 3), torch.tensor([0.5, 0.5])
    out = guided(doubled, 3.0)(x, t)
    expected = classifier_free_guidance(2 * x + 0.5, x + 0.5, 3.0)
    assert calls == [4] and torch.allclose(out, expected)
    assert euler(guided(doubled, 3.0), x, sampling_timesteps(2)).shape == x.shape
