"""``videogen export --ckpt CKPT --out DIR``: a Lightning checkpoint -> a stage export folder.

The checkpoint is read with ``torch.load(weights_only=True)`` (no pickled objects are run); the
stage's module wrote what an export needs into it (``checkpoint["videogen"]``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a trained stage's export folder (config.yaml, model.safetensors, stats.json) from a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a Lightning checkpoint written by videogen fit")
    parser.add_argument("--out", required=True, help="the export folder to write")
    parser.add_argument("--merge-lora", action="store_true",
                        help="a LoRA-finetuned diffusers transformer: fold the adapters into the base weights")


def export_checkpoint(ckpt: str | Path, out: str | Path, merge_lora: bool = False) -> Path:
    from videogen.pretrained import load_checkpoint_module, save_export

    module, stats, record = load_checkpoint_module(ckpt)
    if merge_lora and hasattr(module, "merge_lora"):
        module.merge_lora()
    return save_export(out, module, stats, inputs={"stage": record["stage"], "checkpoint": record["checkpoint"],
                                                   "global_step": record["global_step"]})


def run(args: argparse.Namespace) -> int:
    try:
        folder = export_checkpoint(args.ckpt, args.out, merge_lora=args.merge_lora)
    except (FileNotFoundError, ValueError) as e:
        print(f"videogen export: {e}")
        return 2
    print(f"exported to {folder}")
    return 0
