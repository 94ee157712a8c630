"""``videogen scorecard``: the held-out figures of every stage beside their targets, in one table.

    videogen scorecard --vae runs/vae/quickstart/export --captioner runs/captioner/quickstart/export \\
        --dit runs/dit/quickstart/export --data data/synthetic-heldout/train \\
        --out runs/pipeline/quickstart/scorecard.json [--vae-config configs/vae/quickstart.yaml ...]

On a held-out synthetic set (clips and prompts no stage trained on):

* **VAE**: every clip reconstructed as ``videogen eval-vae`` does: PSNR, SSIM, colour kept (the pixel
  judge calls the reconstruction's object by its true colour);
* **recaptions**: the captioner relabels the set as ``videogen recaption`` does (greedy, into a
  temporary folder); colour, shape and direction accuracy against the clips' ground truth, scored as
  ``benchmarks/eval_recaption.py`` scores them;
* **text-to-video**: the DiT samples one video per held-out long caption (the first ``--num-prompts``
  moving clips; ``--steps`` Euler steps, guidance ``--cfg``, prompt i with seed ``--seed + i``) and the
  pixel judge reads its colour and direction, as ``benchmarks/eval_dit_attributes.py`` does.

The figures, targets and advice are :mod:`videogen.evaluation.scorecard`'s. The card is printed and
written to ``--out`` (JSON: ``passed``, ``figures`` with each value and target, ``misses`` with what to
do, ``stages``, ``settings``, ``details``, ``inputs``). A card already at ``--out`` for the same exports
(weights hashes), data and settings is shown again without measuring (``--force`` measures anew).
``--vae-config`` etc. name each stage's fit config, so the advice can say which step budget to raise.

Exit status: 0 when every target is met (or with ``--no-fail``: a report only), 1 when a figure is
below its target, 2 when an export, the data or an option cannot be used.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELP = "held-out figures of every stage (VAE, recaptions, text-to-video) beside their targets; exit 1 below target"

MAX_CONFIG_BYTES = 1 << 20  # a stage config read for the advice
MAX_CARD_BYTES = 16 << 20  # a previous card read back


class ScorecardError(ValueError):
    """An input the scorecard cannot use; the message names the option and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="the VAE export folder (or checkpoint)")
    parser.add_argument("--captioner", required=True, help="the captioner export folder (or checkpoint)")
    parser.add_argument("--dit", required=True, help="the DiT export folder (or checkpoint)")
    parser.add_argument("--data", required=True, metavar="SHARDS",
                        help="held-out synthetic shards (json.attributes and captions.long), e.g. data/synthetic-heldout/train")
    parser.add_argument("--out", required=True, help="where the card's JSON goes, e.g. runs/pipeline/quickstart/scorecard.json")
    for stage in ("vae", "captioner", "dit"):
        parser.add_argument(f"--{stage}-config", default=None, metavar="YAML",
                            help=f"the {stage} stage's fit config (its step budget is named in the advice)")
    parser.add_argument("--num-prompts", type=int, default=60, help="held-out prompts sampled (default 60)")
    parser.add_argument("--steps", type=int, default=30, help="Euler steps per video (default 30)")
    parser.add_argument("--cfg", type=float, default=4.0, help="classifier-free guidance scale (default 4)")
    parser.add_argument("--shape", type=int, nargs=3, default=(9, 64, 96), metavar=("FRAMES", "H", "W"),
                        help="sampled videos' frames, height, width (default 9 64 96)")
    parser.add_argument("--batch-size", type=int, default=12, help="videos sampled together (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed SEED + i (default 0)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 below target too (a report, e.g. the smoke run)")
    parser.add_argument("--force", action="store_true", help="measure again even when --out holds a card for these inputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_settings(args: argparse.Namespace) -> None:
    for name in ("num_prompts", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ScorecardError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if not args.cfg > 0:
        raise ScorecardError(f"--cfg {args.cfg}: must be a positive guidance scale, e.g. 4")
    if min(args.shape) < 1:
        raise ScorecardError(f"--shape {' '.join(map(str, args.shape))}: frames, height and width must be positive")


def read_stage_config(path: str | None, option: str) -> dict[str, Any]:
    """``config``, ``max_steps``, ``max_time`` of a stage's fit config (for the advice); {} without one."""
    import yaml

    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ScorecardError(f"{option} {path}: no such file; give the stage's fit config (e.g. configs/vae/quickstart.yaml)")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ScorecardError(f"{option} {path}: {p.stat().st_size} bytes is over {MAX_CONFIG_BYTES}: not a fit config")
    try:
        cfg = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ScorecardError(f"{option} {path}: not YAML ({str(e).splitlines()[0]})") from None
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    if not isinstance(trainer, dict):
        raise ScorecardError(f"{option} {path}: no trainer section; give the stage's fit config")
    steps = trainer.get("max_steps")
    return {"config": str(path), "max_steps": steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
            "max_time": trainer.get("max_time") if isinstance(trainer.get("max_time"), str) else None}


def load_exports(args: argparse.Namespace):
    """(the VAE's Export, the DiT's Generator, what is known of each stage, the device), or a
    ScorecardError naming the option. The captioner is loaded here only to refuse a bad one early."""
    import torch

    from videogen.errors import RefusedFile
    from videogen.evaluation.generation import load_generator
    from videogen.models.dit import DiT
    from videogen.models.vae import VideoAutoencoder
    from videogen.pipelines.captioning import load_captioner
    from videogen.pretrained import load_stage

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = {}
    for option, path, load in (("--vae", args.vae, lambda p: load_stage(p, expect=VideoAutoencoder)),
                               ("--captioner", args.captioner, lambda p: load_captioner(p)[0]),
                               ("--dit", args.dit, lambda p: load_stage(p, expect=DiT))):
        try:
            loaded[option] = load(path)
        except (FileNotFoundError, ValueError, TypeError, KeyError, RefusedFile) as e:
            raise ScorecardError(f"{option} {path}: {e}") from None
    try:
        generator = load_generator(args.dit, device)
    except (FileNotFoundError, ValueError, TypeError, KeyError, RefusedFile) as e:
        raise ScorecardError(f"--dit {args.dit}: {e}") from None
    stages = {}
    for stage, option, path in (("vae", "--vae", args.vae), ("captioner", "--captioner", args.captioner),
                                ("dit", "--dit", args.dit)):
        manifest = loaded[option].manifest
        steps = (manifest.get("inputs") or {}).get("global_step")
        stages[stage] = {"export": str(path), "weights_sha256": manifest.get("weights_sha256"),
                         "steps": steps if isinstance(steps, int) else None,
                         **read_stage_config(getattr(args, f"{stage}_config"), f"--{stage}-config")}
    return loaded["--vae"], generator, stages, device


def check_shape(generator, shape) -> None:
    from videogen.models.latent_grid import LatentGrid

    frames, height, width = shape
    grid = LatentGrid.from_stats(generator.stats, tuple(generator.dit.patch_size))
    problem = grid.problem(frames, height, width)
    if problem:
        fm, pt, (_, th, tw) = grid.frame_multiple, grid.patch[0], grid.token_shape
        raise ScorecardError(f"--shape {frames} {height} {width}: this DiT and VAE sample 1 + k*{fm} frames (latent "
                             f"frames a multiple of {pt}) at heights that are multiples of {th} and widths of "
                             f"{tw}, e.g. --shape {grid.frames_for(5)} {8 * th} {12 * tw} ({problem})")


def heldout_prompts(data: str, limit: int) -> tuple[list[str], list[dict[str, str]]]:
    """The long captions and (colour, direction) of the set's first ``limit`` moving clips."""
    from videogen.data.stages import Skips
    from videogen.evaluation.videos import shard_records

    prompts, wants = [], []
    for record in shard_records(data, Skips(max_logged=0)):
        truth, long = record.meta.get("attributes"), (record.meta.get("captions") or {}).get("long")
        if not (isinstance(truth, dict) and isinstance(long, str) and isinstance(truth.get("colour"), str)
                and truth.get("direction") not in (None, "none")):
            continue
        prompts.append(long)
        wants.append({"colour": truth["colour"], "direction": truth["direction"]})
        if len(prompts) >= limit:
            break
    if not prompts:
        raise ScorecardError(f"--data {data}: no moving clip with json attributes and captions.long; give a "
                             "held-out synthetic set (videogen make-synthetic --out DIR --seed 1 --val-fraction 0)")
    return prompts, wants


def measure_vae(vae, urls: list[str], device: str, progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from videogen.evaluation.reconstruction import evaluate_vae

    report = evaluate_vae(vae.eval(), urls, torch.device(device), progress=progress)
    if not report["num_clips"]:
        raise ScorecardError(f"no held-out clip could be reconstructed ({report['num_skipped']} skipped); run "
                             "`videogen inspect` on --data")
    figures = {"vae_psnr": report["psnr"], "vae_ssim": report["ssim"], "vae_colour_kept": report["colour_agreement"]}
    details = {k: report[k] for k in ("num_clips", "num_skipped", "colour_agreement_original", "frames_per_clip")}
    return figures, details


def measure_recaptions(captioner: str, data: str, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from videogen.pipelines.recaption import recaption
    from videogen.data.stages import Skips
    from videogen.evaluation.scorecard import attribute_accuracy
    from videogen.evaluation.videos import shard_records

    with tempfile.TemporaryDirectory(prefix="scorecard-recaption-") as work:
        summary = recaption(captioner, data, Path(work) / "out", device=device, progress=False)
        rows = [(r.meta.get("attributes") or {}, r.meta["captions"]["recaption"])
                for r in shard_records(str(Path(work) / "out"), Skips(max_logged=0))
                if isinstance((r.meta.get("captions") or {}).get("recaption"), str)]
    accuracy = attribute_accuracy(rows)
    wrong = [{"attributes": truth, "caption": caption} for (truth, caption), ok in
             zip(rows, _all_right(rows)) if not ok][:10]
    figures = {f"recaption_{a}": v["accuracy"] for a, v in accuracy.items()}
    return figures, {"num_captions": len(rows), "accuracy": accuracy, "skipped": summary["skipped"], "wrong": wrong}


def _all_right(rows):
    from videogen.evaluation.caption_metrics import attribute_hits

    return [all(attribute_hits(caption, truth).values()) for truth, caption in rows]


def measure_t2v(generator, data: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from videogen.evaluation.scorecard import t2v_accuracy

    prompts, wants = heldout_prompts(data, args.num_prompts)
    frames, height, width = args.shape
    result = t2v_accuracy(generator, prompts, wants, num_frames=frames, height=height, width=width, steps=args.steps,
                          cfg=args.cfg, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress)
    figures = {"t2v_colour": result.pop("colour"), "t2v_direction": result.pop("direction")}
    return figures, result


def data_identity(data: str, urls: list[str]) -> str:
    """A hash of the held-out set: its manifest when it has one, else its shard names and sizes."""
    h = hashlib.sha256()
    manifest = Path(data) / "dataset.json"
    if manifest.is_file() and manifest.stat().st_size < MAX_CARD_BYTES:
        h.update(manifest.read_bytes())
    for url in urls:
        p = Path(url)
        h.update(f"{p.name}:{p.stat().st_size if p.is_file() else ''}".encode())
    return h.hexdigest()


def previous_card(out: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The card at ``out`` when it was measured on the same inputs (anything unreadable: None)."""
    try:
        if not out.is_file() or out.stat().st_size > MAX_CARD_BYTES:
            return None
        card = json.loads(out.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(card, dict) or card.get("inputs") != inputs or not isinstance(card.get("figures"), list):
        return None
    if not all(isinstance(r, dict) and isinstance(r.get("key"), str) for r in card["figures"]):
        return None
    return card


def run(args: argparse.Namespace) -> int:
    from videogen.data.shards import expand_urls
    from videogen.evaluation.scorecard import build_card, format_card

    def fail(message: str) -> int:
        print(f"videogen scorecard: error: {message}", file=sys.stderr)
        return 2

    try:
        check_settings(args)
        if not Path(args.data).exists():
            raise ScorecardError(f"--data {args.data}: no such folder; make the held-out set first (videogen "
                                 "make-synthetic --out data/synthetic-heldout --num-samples 60 --seed 1 --val-fraction 0)")
        try:
            urls = expand_urls(args.data)
        except (FileNotFoundError, ValueError) as e:
            raise ScorecardError(f"--data {args.data}: {e}") from None
        vae, generator, stages, device = load_exports(args)
        check_shape(generator, args.shape)
    except ScorecardError as e:
        return fail(str(e))
    settings = {"num_prompts": args.num_prompts, "steps": args.steps, "cfg": args.cfg, "shape": list(args.shape),
                "seed": args.seed, "sampler": "euler", "recaption": "greedy"}
    inputs = {"weights_sha256": {s: stages[s]["weights_sha256"] for s in stages},
              "data": data_identity(args.data, urls), "settings": settings}
    out = Path(args.out)
    old = None if args.force else previous_card(out, inputs)
    if old is not None:
        print(f"videogen scorecard: {out} was measured on these exports, data and settings: shown again "
              "(--force measures anew)", file=sys.stderr)
        figures = {r["key"]: r.get("value") for r in old["figures"]}
        details, seconds = old.get("details") or {}, old.get("seconds") or {}
        measured_at = old.get("measured_at")
    else:
        figures, details, seconds = {}, {}, {}
        measured_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            for name, measure in (("vae", lambda: measure_vae(vae.module, urls, device, not args.no_progress)),
                                  ("recaption", lambda: measure_recaptions(args.captioner, args.data, device)),
                                  ("t2v", lambda: measure_t2v(generator, args.data, args))):
                began = time.perf_counter()
                f, details[name] = measure()
                figures.update(f)
                seconds[name] = round(time.perf_counter() - began, 1)
        except ScorecardError as e:
            return fail(str(e))
    card = build_card(figures, stages, data=str(args.data), settings=settings, details=details, seconds=seconds,
                      inputs=inputs, measured_at=measured_at)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(out)
    print(format_card(card))
    print(f"wrote {out}")
    if card["passed"] or args.no_fail:
        return 0
    return 1
