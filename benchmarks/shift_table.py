"""The timestep shift and the share of training timesteps below 0.5 for every bucket of a DiT config.

    .venv/bin/python benchmarks/shift_table.py configs/dit/base_256p.yaml 4x16x16

Tokens per bucket come from the token shape (pixels per token: VAE compression times DiT patch, causal
in time: 1 + (frames - 1) / tt latent frames), given as the second argument: a config does not type it
(training takes it from the model; ``data.init_args.bucketer.token_shape`` when one does); the shift is
``videogen.diffusion.timestep_shift`` with the module's ``shift_base_tokens``/``shift_max``, as
training and sampling use it. Training timesteps are ``shift(sigmoid(N(mean, std)), s)``, below 0.5
exactly when ``N(mean, std) < -ln s``: the share is ``Phi((-ln s - mean) / std)``. docs/dit.md holds
this table for configs/dit/base_256p.yaml (a test keeps it true).
"""

from __future__ import annotations

import math
import sys

import yaml


def rows(config_path: str, token_shape: tuple[int, int, int] | None = None) -> list[dict]:
    """One row per bucket of the config's ``data.init_args.bucketer``; ``token_shape`` (pixels per token)
    when it has none."""
    from videogen.diffusion import timestep_shift

    config = yaml.safe_load(open(config_path, encoding="utf-8"))
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    base, cap = model.get("shift_base_tokens", 256), model.get("shift_max", 5.0)
    mean, std = model.get("timestep_mean", 0.0), model.get("timestep_std", 1.0)
    bucketer = data["bucketer"]
    if not (token_shape or bucketer.get("token_shape")):
        raise SystemExit(f"{config_path}: give the token shape (VAE compression x DiT patch), e.g. 4x16x16")
    tt, th, tw = token_shape or bucketer["token_shape"]
    out = []
    for b in bucketer["buckets"]:
        temporal, spatial = 1 + (b["num_frames"] - 1) // tt, (b["height"] // th) * (b["width"] // tw)
        shift = timestep_shift(temporal, spatial, base, cap)
        uncapped = timestep_shift(temporal, spatial, base, None)
        share = 0.5 * (1 + math.erf((-math.log(shift) - mean) / std / math.sqrt(2)))
        uncapped_share = 0.5 * (1 + math.erf((-math.log(uncapped) - mean) / std / math.sqrt(2)))
        out.append({**b, "mean": mean, "std": std, "temporal": temporal, "spatial": spatial, "shift": shift, "below_half": share,
                    "uncapped_shift": uncapped, "uncapped_below_half": uncapped_share})
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| bucket (frames x H x W) | tokens (t x h·w) | shift | t < 0.5 | uncapped shift | t < 0.5 uncapped |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        lines.append(f"| {r['num_frames']} x {r['height']} x {r['width']} | {r['temporal']} x {r['spatial']} | "
                     f"{r['shift']:.2f} | {r['below_half']:.1%} | {r['uncapped_shift']:.2f} | "
                     f"{r['uncapped_below_half']:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    shape = tuple(int(x) for x in sys.argv[2].split("x")) if len(sys.argv) > 2 else None  # e.g. 2x8x8
    print(markdown(rows(sys.argv[1] if len(sys.argv) > 1 else "configs/dit/base_256p.yaml", shape)))
