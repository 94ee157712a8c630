"""The report folder of ``videogen evaluate``:

    REPORT_DIR/metrics.json   one flat object: metric -> value, plus num_videos
    REPORT_DIR/report.json    per-video values, judge verdicts, skipped inputs and metrics, settings
    REPORT_DIR/grid.png       one row per prompt, evenly spaced frames left to right
    REPORT_DIR/videos/        the evaluated videos as mp4 and samples.jsonl (file, prompt, seed, attributes),
                              so ``videogen evaluate --videos REPORT_DIR/videos`` measures them again
    REPORT_DIR/plots/*.png    (a run folder of checkpoints) every metric over training steps; curve.json
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from videogen.evaluation.videos import EvalVideo

GRID_FRAMES = 8
CELL_HEIGHT = 96
LABEL_HEIGHT = 14


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value: Any):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def mp4_bytes(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 RGB -> H.264 mp4 (yuv420p; odd sizes padded by one edge pixel), any frame rate,
    fractional ones included. One thread, no B-frames, no lookahead: the same frames give the same bytes
    (the curation steps re-encode clips with it too, ``data_recipes.curate.frames.encode_rgb``)."""
    import io

    import av

    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate, options={
            "crf": str(crf), "preset": "veryfast", "threads": "1", "bf": "0",
            "x264-params": "rc-lookahead=0:mbtree=0:asm=0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def file_name(index: int, prompt: str | None) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (prompt or "video").lower()).strip("-")[:40]
    return f"{index:03d}_{slug}.mp4"


def write_videos(folder: Path, videos: Sequence[EvalVideo]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, v in enumerate(videos):
        name = file_name(i, v.prompt)
        (folder / name).write_bytes(mp4_bytes(v.frames, v.fps))
        rows.append({"file": name, "prompt": v.prompt, "seed": v.seed, "attributes": v.attributes, **v.extra})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def grid_image(videos: Sequence[EvalVideo], frames: int = GRID_FRAMES, cell_height: int = CELL_HEIGHT):
    """A PIL image: one row per video (its prompt above it), ``frames`` evenly spaced frames."""
    from PIL import Image, ImageDraw

    rows = []
    for v in videos:
        idx = np.linspace(0, len(v.frames) - 1, min(frames, len(v.frames))).round().astype(int)
        h, w = v.frames.shape[1:3]
        cell_w = max(1, round(cell_height * w / h))
        cells = [Image.fromarray(v.frames[i]).resize((cell_w, cell_height), Image.BILINEAR) for i in idx]
        row = Image.new("RGB", (cell_w * len(cells), cell_height + LABEL_HEIGHT), "white")
        for j, cell in enumerate(cells):
            row.paste(cell, (j * cell_w, LABEL_HEIGHT))
        ImageDraw.Draw(row).text((2, 1), (v.prompt or v.name)[:160], fill="black")
        rows.append(row)
    width = max((r.width for r in rows), default=1)
    grid = Image.new("RGB", (width, max(1, sum(r.height for r in rows))), "white")
    y = 0
    for r in rows:
        grid.paste(r, (0, y))
        y += r.height
    return grid


def write_report(out: Path, metrics: dict[str, Any], details: dict[str, Any], videos: Sequence[EvalVideo],
                 save_videos: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if videos:
        grid_image(videos).save(out / "grid.png")
    if save_videos and videos:
        write_videos(out / "videos", videos)
    write_json(out / "report.json", details)
    write_json(out / "metrics.json", metrics)  # last: its presence means the report is complete


def plot_curves(out: Path, curve: Sequence[dict[str, Any]]) -> list[Path]:
    """One PNG per metric over training steps, from ``[{"step": s, "metrics": {...}}, ...]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for point in curve for k, v in point["metrics"].items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "num_videos"})
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        points = [(p["step"], p["metrics"][name]) for p in curve
                  if isinstance(p["metrics"].get(name), (int, float)) and math.isfinite(p["metrics"][name])]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o")
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
