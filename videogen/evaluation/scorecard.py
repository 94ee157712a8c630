"""The scorecard: every stage's held-out figures beside their targets, and what to do about a miss.

``videogen scorecard`` (``videogen/commands/scorecard.py``) measures the figures and hands them here;
this file holds what they are judged against and how, so the command, the tests and the benchmarks
(``benchmarks/eval_recaption.py``, ``benchmarks/eval_dit_attributes.py``) share one definition:

* :data:`TARGETS`: the figures and their floors (issue 15: VAE PSNR >= 30 dB; recaption colour, shape
  and direction >= 95% each; text-to-video colour >= 95%, direction >= 90%). SSIM and colour kept
  are shown without a floor.
* :func:`attribute_accuracy`: recaptions judged against the synthetic ground truth (a caption is right
  about an attribute when it names the true value and no other value of it).
* :func:`t2v_accuracy`: videos sampled from held-out prompts, judged from their pixels by the synthetic
  set's judge (``judge_clip`` of :mod:`videogen.evaluation.judge`).
* :func:`judge_figures` (pass/fail per figure), :func:`advice` (one line per miss: which stage, and
  which step budget to raise), :func:`format_card`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

STAGES = ("vae", "captioner", "dit")
STAGE_NAMES = {"vae": "VAE", "captioner": "captioner", "dit": "DiT"}


@dataclass(frozen=True)
class FigureTarget:
    key: str  # the figure's key in the card
    stage: str  # which stage's training decides it: vae | captioner | dit
    label: str
    minimum: float | None  # None: shown, not judged
    unit: str  # "dB", "%" (a fraction shown as a percentage) or "" (a plain number)


TARGETS: tuple[FigureTarget, ...] = (
    FigureTarget("vae_psnr", "vae", "VAE PSNR", 30.0, "dB"),
    FigureTarget("vae_ssim", "vae", "VAE SSIM", None, ""),
    FigureTarget("vae_colour_kept", "vae", "VAE colour kept", None, "%"),
    FigureTarget("recaption_colour", "captioner", "recaption colour", 0.95, "%"),
    FigureTarget("recaption_shape", "captioner", "recaption shape", 0.95, "%"),
    FigureTarget("recaption_direction", "captioner", "recaption direction", 0.95, "%"),
    FigureTarget("t2v_colour", "dit", "text-to-video colour", 0.95, "%"),
    FigureTarget("t2v_direction", "dit", "text-to-video direction", 0.90, "%"),
)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f}%"
    if unit == "dB":
        return f"{value:.2f} dB"
    return f"{value:.4f}"


def judge_figures(figures: dict[str, float | None], targets: Sequence[FigureTarget] = TARGETS) -> list[dict[str, Any]]:
    """One row per target: ``key``, ``stage``, ``label``, ``value``, ``target``, ``unit``, ``passed``
    (None for a figure without a floor; False for a floor whose figure is missing or not a number)."""
    rows = []
    for t in targets:
        value = figures.get(t.key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        passed = None if t.minimum is None else bool(number and value >= t.minimum)
        rows.append({"key": t.key, "stage": t.stage, "label": t.label, "value": value if number else None,
                     "target": t.minimum, "unit": t.unit, "passed": passed})
    return rows


def suggested_steps(steps: int) -> int:
    """1.5x a step budget, rounded up to a hundred: the next budget to try."""
    return int(math.ceil(steps * 1.5 / 100) * 100)


def advice(row: dict[str, Any], stage: dict[str, Any], upstream_missed: bool = False) -> str:
    """What to do about one missed figure.

    ``stage``: what is known of the stage that trained it: ``steps`` (the export's global step),
    ``config`` (its fit config file, optional), ``max_steps`` and ``max_time`` (read from it). A run
    stopped before its ``max_steps`` was cut short by its clock; else its budget was too small.
    ``upstream_missed``: the DiT's figures depend on the recaptions it trained on (and the VAE's on
    nothing upstream): a miss there is named first."""
    name = STAGE_NAMES[row["stage"]]
    what = f"{row['label']} {format_value(row['value'], row['unit'])}"
    if row["target"] is not None:
        what += f" < {format_value(row['target'], row['unit'])}"
    config, steps, budget = stage.get("config"), stage.get("steps"), stage.get("max_steps")
    where = f" in {config}" if config else ""
    if upstream_missed and row["stage"] == "dit":
        return (f"{what}: the DiT trains on the recaptions, which missed their targets too: fix the captioner "
                "first (see its line), then rerun")
    if isinstance(steps, int) and isinstance(budget, int) and 0 < steps < budget:
        return (f"{what}: the {name} trained only {steps} of its {budget} steps (trainer.max_time stopped it): "
                f"raise trainer.max_time{where} (or give the run the machine to itself) and rerun")
    base = budget if isinstance(budget, int) and budget > 0 else steps if isinstance(steps, int) and steps > 0 else None
    if base is None:
        return (f"{what}: train the {name} longer (raise trainer.max_steps and "
                f"model.init_args.lr_scheduler.init_args.decay{where})")
    more, trained = suggested_steps(base), steps if isinstance(steps, int) else base
    flags = f"--trainer.max_steps={more} --model.init_args.lr_scheduler.init_args.decay={more}"
    if config:
        return f"{what}: train the {name} longer: {flags} (set both in {config}; it trained {trained} steps), then rerun"
    return f"{what}: train the {name} longer: {flags} on its fit (it trained {trained} steps), then rerun"


def misses(rows: list[dict[str, Any]], stages: dict[str, dict[str, Any]]) -> list[str]:
    """One advice line per figure below its floor, in stage order."""
    captioner_missed = any(r["passed"] is False for r in rows if r["stage"] == "captioner")
    return [advice(r, stages.get(r["stage"], {}), upstream_missed=captioner_missed)
            for r in rows if r["passed"] is False]


def format_card(card: dict[str, Any]) -> str:
    """The printed scorecard: one line per figure, then the misses with what to do."""
    lines = [f"scorecard: held-out figures ({card.get('data', '?')}) beside their targets"]
    width = max(len(r["label"]) for r in card["figures"])
    for r in card["figures"]:
        target = "" if r["target"] is None else ">= " + format_value(r["target"], r["unit"])
        verdict = {True: "ok", False: "BELOW TARGET", None: ""}[r["passed"]]
        lines.append(f"  {r['label']:<{width}}  {format_value(r['value'], r['unit']):>9}  {target:<11} {verdict}".rstrip())
    judged = [r for r in card["figures"] if r["passed"] is not None]
    if card["passed"]:
        lines.append(f"every target met ({len(judged)} of {len(judged)})")
    else:
        lines.append(f"below target: {len(card['misses'])} of {len(judged)}; what to do:")
        lines += [f"  - {m}" for m in card["misses"]]
    return "\n".join(lines)


def build_card(figures: dict[str, float | None], stages: dict[str, dict[str, Any]],
               targets: Sequence[FigureTarget] = TARGETS, **extra: Any) -> dict[str, Any]:
    """The card: ``passed`` (every floor met), ``figures`` (the judged rows), ``misses`` (advice lines),
    ``stages``, and whatever ``extra`` adds (the data, the settings, the details of each measurement)."""
    rows = judge_figures(figures, targets)
    return {"passed": all(r["passed"] is not False for r in rows), "figures": rows,
            "misses": misses(rows, stages), "stages": stages, **extra}


# ---- the measurements' shared parts ---------------------------------------------------------


def attribute_accuracy(rows: Sequence[tuple[dict[str, Any], str]],
                       attributes: Sequence[str] = ("colour", "shape", "direction")) -> dict[str, dict[str, Any]]:
    """Recaptions judged against ground truth: ``rows`` are ``(attributes, caption)``; per attribute the
    ``correct`` count, ``n`` (captions whose clip has that attribute in the vocabulary) and ``accuracy``
    (None when n is 0)."""
    from videogen.evaluation.caption_metrics import attribute_hits

    hits = [attribute_hits(caption, truth or {}) for truth, caption in rows]
    out = {}
    for attr in attributes:
        judged = [h[attr] for h in hits if attr in h]
        out[attr] = {"correct": sum(judged), "n": len(judged),
                     "accuracy": round(sum(judged) / len(judged), 4) if judged else None}
    return out


def t2v_accuracy(generator, prompts: Sequence[str], wants: Sequence[dict[str, Any]], *, num_frames: int,
                 height: int, width: int, steps: int = 30, cfg: float = 4.0, seed: int = 0, batch_size: int = 12,
                 progress: bool = False) -> dict[str, Any]:
    """Sample one video per prompt (prompt i with seed ``seed + i``, :mod:`videogen.evaluation.generation`)
    and judge its colour and direction from the pixels against ``wants`` (each ``{"colour", "direction"}``).
    Returns ``colour`` and ``direction`` accuracies, ``n``, the confusions (``want->got`` counts) and
    one result per prompt."""
    from videogen.evaluation.generation import generate_videos
    from videogen.evaluation.judge import judge_videos
    from videogen.evaluation.videos import to_frames

    if len(prompts) != len(wants) or not prompts:
        raise ValueError(f"t2v_accuracy: {len(prompts)} prompts and {len(wants)} targets; give one target per prompt")
    videos = generate_videos(generator, prompts, num_frames=num_frames, height=height, width=width, steps=steps,
                             cfg=cfg, seed=seed, batch_size=batch_size, progress=progress)
    targets = [{"colour": w["colour"], "direction": w["direction"]} for w in wants]
    judged = judge_videos([to_frames(v) for v in videos], targets)
    results = [{"prompt": p, "want_colour": v["want"]["colour"], "want_direction": v["want"]["direction"],
                "got_colour": v["got"]["colour"], "got_direction": v["got"]["direction"]}
               for p, v in zip(prompts, judged["verdicts"])]
    confusions = {a: dict(Counter(f"{r[f'want_{a}']}->{r[f'got_{a}']}" for r in results
                                  if r[f"got_{a}"] != r[f"want_{a}"])) for a in ("colour", "direction")}
    return {"colour": judged["judge_colour"], "direction": judged["judge_direction"], "n": len(results),
            "confusions": confusions, "results": results}
