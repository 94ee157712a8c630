"""``videogen export --ckpt CKPT --out DIR``: a Lightning checkpoint -> a stage export folder.

The checkpoint is read with ``torch.load(weights_only=True)`` (no pickled objects are run); the
stage's module wrote what an export needs into it (``checkpoint["videogen"]``: the pure module's
config, its statistics, and which part of the state dict holds its weights).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a trained stage's export folder (config.yaml, model.safetensors, stats.json) from a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a Lightning checkpoint written by videogen fit")
    parser.add_argument("--out", required=True, help="the export folder to write")


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    import torch

    from videogen.pretrained import from_config, save_export

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no such checkpoint")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{ckpt}: cannot be read safely (weights_only=True): {str(e).splitlines()[0][:300]}") from e
    info = state.get("videogen")
    if not info:
        raise ValueError(f"{ckpt}: has no 'videogen' record; it was not written by a videogen stage module")
    module = from_config(info["config"])
    prefix = info["export_prefix"]
    weights = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    module.load_state_dict(weights)
    return save_export(out, module, info["stats"], inputs={"stage": info["stage"], "checkpoint": str(ckpt),
                                                           "global_step": state.get("global_step")})


def run(args: argparse.Namespace) -> int:
    try:
        folder = export_checkpoint(args.ckpt, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"videogen export: {e}")
        return 2
    print(f"exported to {folder}")
    return 0
