"""The curation report: ``curation.json`` (counts per step and reason, inputs skipped, every
sample's decision) and one PNG histogram per numeric score, with its threshold drawn in.

Histograms are drawn with matplotlib when it is installed, else with Pillow (bars and labels).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.curate.decide import RULES
from data_recipes.curate.options import CurateOptions

FORMAT = "videogen-curation/1"
NOT_PLOTTED = {"num_scenes", "duplicate_distance"}


def build(out: Path, ordered: list[dict], entries: list[dict], decision: dict, opts: CurateOptions,
          created_by: dict, skipped: list[dict], timing: dict) -> dict[str, Any]:
    kept = [e for e in entries if e["kept"]]
    inputs = sum(r["inputs_read"] for r in ordered)
    reasons = Counter(e["reasons"][0] for e in entries if e["reasons"] and not e["kept"])
    return {
        "format": FORMAT,
        "created_by": created_by,
        "options": opts.to_dict(),
        "inputs": {"shards": len(ordered), "samples": inputs, "skipped": len(skipped),
                   "skipped_reasons": dict(Counter(s["reason"] for s in skipped))},
        "output": {"dir": str(out), "samples": len(kept), "shards": sum(1 for r in ordered
                                                                        if any(e["kept"] for e in r["entries"]))},
        "pieces": len([e for e in entries if e["scored"]]),
        "dropped": dict(sorted(reasons.items())),
        "steps": decision["steps"],
        "score_names": decision["score_types"],
        "timing": timing,
        "skipped": skipped,
        "samples": [{"key": e["key"], "source": e["source"], "kept": e["kept"], "reasons": e["reasons"],
                     "scores": e.get("scores", {})} for e in entries],
    }


def summary(rep: dict[str, Any]) -> str:
    lines = [f"curate: {rep['inputs']['samples']} samples in {rep['inputs']['shards']} shards -> "
             f"{rep['pieces']} pieces scored -> {rep['output']['samples']} kept in {rep['output']['shards']} shards "
             f"({rep['output']['dir']})"]
    for step, counts in rep["steps"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in counts.get("dropped", {}).items()) or "none"
        extra = "".join(f", {k} {counts[k]}" for k in ("clips_split", "pieces", "groups") if k in counts)
        lines.append(f"  {step:<12} dropped: {dropped}{extra}")
    if rep["skipped"]:
        lines.append(f"  inputs skipped: {rep['inputs']['skipped']} ("
                     + ", ".join(f"{k} {v}" for k, v in rep["inputs"]["skipped_reasons"].items()) + ")")
    lines.append(f"  report: {Path(rep['output']['dir']) / 'curation.json'}")
    return "\n".join(lines)


def histograms(folder: Path, entries: list[dict], opts: CurateOptions, backend: str = "auto") -> list[str]:
    """One PNG per numeric score over every scored piece; returns the file names written."""
    values: dict[str, list[float]] = {}
    for e in entries:
        for k, v in (e.get("scores") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_PLOTTED:
                values.setdefault(k, []).append(float(v))
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "auto":
        try:
            import matplotlib  # noqa: F401

            backend = "matplotlib"
        except ImportError:
            backend = "pil"
    draw = _matplotlib if backend == "matplotlib" else _pil
    names = []
    for name, vals in sorted(values.items()):
        thresholds = [r.threshold(opts) for r in RULES if r.score == name and r.step in opts.steps]
        path = folder / f"{name}.png"
        draw(path, name, np.asarray(vals), thresholds)
        names.append(path.name)
    return names


def _bins(vals: np.ndarray, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        hi = lo + 1e-9
    return np.histogram(vals, bins=n, range=(lo, hi))


def _matplotlib(path: Path, name: str, vals: np.ndarray, thresholds: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    counts, edges = _bins(vals)
    ax.stairs(counts, edges, fill=True, alpha=0.8)
    for threshold in thresholds:
        ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
    if thresholds:
        ax.legend(fontsize=8)
    ax.set_title(f"{name} ({len(vals)} clips)", fontsize=10)
    ax.set_xlabel(name)
    ax.set_ylabel("clips")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pil(path: Path, name: str, vals: np.ndarray, thresholds: list[float]) -> None:
    from PIL import Image, ImageDraw

    w, h, margin = 500, 300, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    counts, edges = _bins(vals)
    top = max(1, int(counts.max()))
    bw = (w - 2 * margin) / len(counts)
    for i, c in enumerate(counts):
        x0 = margin + i * bw
        d.rectangle([x0, h - margin - (h - 2 * margin) * c / top, x0 + bw - 1, h - margin], fill=(70, 110, 200))
    d.line([margin, h - margin, w - margin, h - margin], fill="black")
    d.text((margin, 8), f"{name} ({len(vals)} clips, max bin {top})", fill="black")
    d.text((margin, h - margin + 6), f"{edges[0]:.4g}", fill="black")
    d.text((w - margin - 60, h - margin + 6), f"{edges[-1]:.4g}", fill="black")
    for threshold in thresholds:
        if not edges[0] <= threshold <= edges[-1]:
            continue
        x = margin + (threshold - edges[0]) / (edges[-1] - edges[0]) * (w - 2 * margin)
        d.line([x, margin, x, h - margin], fill="red", width=2)
        d.text((x + 3, margin), f"threshold {threshold:g}", fill="red")
    img.save(path)
