"""The synthetic set: one large coloured shape moving in a straight line over a dark background.

Small enough for a tiny VAE/DiT to learn on a laptop CPU in minutes, and labelled exactly: every
clip is drawn from a handful of attributes (shape, colour, background, direction, speed, size; their
values are :mod:`videogen.evaluation.synthetic_world`'s), so generated videos and recaptions can be
scored against them with :func:`videogen.evaluation.judge.judge_clip`, a judge that looks at pixels only.

* :func:`generate_sample` -- sample ``index`` of the set for ``seed`` (a shard-contract sample dict);
  it depends on ``(seed, index, image_fraction)`` only, never on the size of the set.
* :func:`write_synthetic` -- a whole set as WebDataset shards in ``out/train`` and ``out/val``, each
  with a ``dataset.json`` manifest (``videogen make-synthetic`` is a thin wrapper around it).

Clips are H.264 mp4 (:func:`videogen.data.media.encode_mp4`); the same seed gives the same bytes.
Still images (``image_fraction``) are one-frame PNGs.
"""

from __future__ import annotations

import math
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from videogen.data.media import encode_mp4, encode_png
from videogen.evaluation.synthetic_world import (BACKGROUND_STYLES, BACKGROUNDS, COLOURS, DIRECTIONS, SHAPE_FILL,
                                                 SHAPES, SIZES, SPEEDS, STILL)

if TYPE_CHECKING:
    from videogen.data.manifest import DatasetManifest

RECIPE_VERSION = 1  # bump when a change here, in synthetic_world or in media.encode_mp4 changes the samples made

# --- how a clip is drawn (the attributes and their values: videogen.evaluation.synthetic_world) ----

GRADIENT = (1.35, 0.65)  # a gradient background runs from base * 1.35 (top row) to base * 0.65 (bottom row)
MAX_EXTENT = 0.72  # the object's bounding box never exceeds this fraction of the short side
EDGE_MARGIN = 2.0  # pixels kept between the object and the frame edge

# (width, height): landscape, portrait and square, sides multiples of 16 in [64, 160], aspect <= 1.6
FRAME_SIZES = ((96, 64), (112, 80), (128, 80), (144, 96),
               (64, 96), (80, 112), (80, 128), (96, 144),
               (64, 64), (96, 96), (128, 128))
NUM_FRAMES = (9, 13, 17, 21, 25, 29, 33)  # 1 + 4k: whole latent frames for a 4x causal VAE
FPS = (8, 12, 16)

# --- one sample ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one sample; drawn by :func:`draw_spec`."""

    width: int
    height: int
    num_frames: int
    fps: int  # 0 for a still image
    shape: str
    colour: str
    background: str
    background_style: str
    direction: str
    speed: str
    size: str
    extent: float  # side of the object's bounding box, pixels
    start: tuple[float, float]  # centre of the bounding box (x, y) in the first frame
    end: tuple[float, float]  # ... and in the last frame

    @property
    def still(self) -> bool:
        return self.num_frames == 1

    @property
    def attributes(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "background": self.background,
                "background_style": self.background_style, "direction": self.direction,
                "speed": self.speed, "size": self.size}


def draw_spec(rng: np.random.Generator, image_fraction: float = 0.0) -> ClipSpec:
    """Draw one sample's attributes and geometry (the draw order is part of the recipe)."""
    still = bool(rng.random() < image_fraction)
    width, height = FRAME_SIZES[rng.integers(len(FRAME_SIZES))]
    num_frames = 1 if still else int(NUM_FRAMES[rng.integers(len(NUM_FRAMES))])
    fps = 0 if still else int(FPS[rng.integers(len(FPS))])
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    allowed = [name for name, bg in BACKGROUNDS.items() if colour not in bg.clashes]
    background = allowed[rng.integers(len(allowed))]
    style = BACKGROUND_STYLES[rng.integers(len(BACKGROUND_STYLES))]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    speed = list(SPEEDS)[rng.integers(len(SPEEDS))]
    size = list(SIZES)[rng.integers(len(SIZES))]

    short = min(width, height)
    extent = min(math.sqrt(SIZES[size] * width * height / SHAPE_FILL[shape]), MAX_EXTENT * short)
    lo = EDGE_MARGIN + extent / 2
    centre = [float(rng.uniform(lo, width - lo)), float(rng.uniform(lo, height - lo))]
    start, end = list(centre), list(centre)
    if still:
        direction = speed = STILL
    else:
        dx, dy = DIRECTIONS[direction]
        axis = 0 if dx else 1
        side = (width, height)[axis]
        travel = SPEEDS[speed] * (side - 2 * lo)  # the object stays whole and inside the frame
        a = float(rng.uniform(lo, side - lo - travel))
        start[axis], end[axis] = (a, a + travel) if dx + dy > 0 else (a + travel, a)
    return ClipSpec(width, height, num_frames, fps, shape, colour, background, style, direction, speed, size,
                    extent, (start[0], start[1]), (end[0], end[1]))


def _signed_distance(shape: str, px: np.ndarray, py: np.ndarray, half: float) -> np.ndarray:
    """Distance outside the shape (negative inside); px, py relative to the bounding-box centre."""
    if shape == "circle":
        return np.sqrt(px**2 + py**2) - half
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - half
    if shape == "triangle":  # apex at the top centre, base along the bottom of the box
        s5 = math.sqrt(5.0)
        return np.maximum(py - half, np.maximum(-2 * px - (py + half), 2 * px - (py + half)) / s5)
    raise ValueError(f"unknown shape {shape!r}: expected one of {SHAPES}")


def background_rows(spec: ClipSpec) -> np.ndarray:
    """The background colour of every row, (H, 3) float."""
    base = np.asarray(BACKGROUNDS[spec.background].rgb, dtype=np.float64)
    if spec.background_style == "solid":
        scale = np.ones(spec.height)
    else:
        scale = np.linspace(GRADIENT[0], GRADIENT[1], spec.height)
    return np.clip(scale[:, None] * base[None, :], 0, 255)


def shape_coverage(spec: ClipSpec) -> np.ndarray:
    """(T, H, W) float in [0, 1]: how much of each pixel the moving shape covers in each frame."""
    t = np.linspace(0.0, 1.0, spec.num_frames) if spec.num_frames > 1 else np.zeros(1)
    cx = spec.start[0] + (spec.end[0] - spec.start[0]) * t  # (T,)
    cy = spec.start[1] + (spec.end[1] - spec.start[1]) * t
    xs = np.arange(spec.width) + 0.5  # pixel centres
    ys = np.arange(spec.height) + 0.5
    px = xs[None, None, :] - cx[:, None, None]  # (T, 1, W)
    py = ys[None, :, None] - cy[:, None, None]  # (T, H, 1)
    return np.clip(0.5 - _signed_distance(spec.shape, px, py, spec.extent / 2), 0.0, 1.0)  # (T, H, W)


def render_frames(spec: ClipSpec) -> np.ndarray:
    """The clip as (T, H, W, 3) uint8 RGB, the shape anti-aliased by its coverage of each pixel."""
    cover = shape_coverage(spec)  # (T, H, W)
    bg = background_rows(spec)[None, :, None, :]  # (1, H, 1, 3)
    obj = np.asarray(COLOURS[spec.colour], dtype=np.float64)
    frames = bg + (obj - bg) * cover[..., None]  # (T, H, W, 3)
    return np.rint(frames).astype(np.uint8)


# --- captions ------------------------------------------------------------------------------------

_DIRECTION_PHRASES = {
    "left": ("to the left", "toward the left edge", "steadily left"),
    "right": ("to the right", "toward the right edge", "steadily right"),
    "up": ("up", "steadily up", "up toward the top edge"),
    "down": ("down", "steadily down", "down toward the bottom edge"),
}
_SUBJECT = (
    "A {size} {colour} {shape} moves {motion} across the frame.",
    "The video shows a {size} {colour} {shape} travelling {motion}.",
    "In this clip, a {size} {colour} {shape} slides {motion}.",
    "A {colour} {shape}, {size} in the frame, glides {motion} in a straight line.",
)
_SUBJECT_STILL = (
    "A {size} {colour} {shape} rests in the frame.",
    "The image shows a {size} {colour} {shape}.",
    "A {colour} {shape}, {size} in the frame, sits motionless.",
)
_SPEED = {
    "slow": ("Its motion is slow and steady.", "The movement is slow, covering only part of the frame.",
             "It drifts at a slow, even pace."),
    "fast": ("Its motion is fast and steady.", "The movement is fast, sweeping most of the way across the frame.",
             "It travels at a fast, even pace."),
}
_BACKGROUND = {
    "solid": (
        "The background is a plain, solid {background} colour.",
        "Behind it is a flat, solid {background} backdrop.",
        "It stands out against a uniform, solid {background} background.",
    ),
    "gradient": (
        "The background is a soft vertical gradient of {background}, lighter at the top and darker at the bottom.",
        "Behind it, a {background} backdrop fades in a gentle gradient from light at the top to dark at the bottom.",
        "It stands out against a {background} background with a gentle vertical gradient.",
    ),
}
_FRAMING = (
    "The camera is still and the {orientation} clip lasts about {duration:.1f} seconds.",
    "The shot is static, in {orientation} format, with nothing else in the scene.",
    "There is no camera motion; the {orientation} frame holds only the one object.",
)
_FRAMING_STILL = ("This is a still image in {orientation} format.", "Nothing else appears in the image.")


def short_caption(spec: ClipSpec) -> str:
    return f"a {spec.colour} {spec.shape}"


def long_caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """Several sentences naming every attribute, wording drawn from the templates above."""
    def pick(options):
        return options[rng.integers(len(options))]

    orientation = "landscape" if spec.width > spec.height else "portrait" if spec.height > spec.width else "1:1"
    fields = {"size": spec.size, "colour": spec.colour, "shape": spec.shape, "background": spec.background,
              "orientation": orientation, "duration": spec.num_frames / spec.fps if spec.fps else 0.0}
    if spec.still:
        subject = pick(_SUBJECT_STILL).format(**fields)
        rest = [pick(_BACKGROUND[spec.background_style]), pick(_FRAMING_STILL)]
    else:
        subject = pick(_SUBJECT).format(motion=pick(_DIRECTION_PHRASES[spec.direction]), **fields)
        rest = [pick(_SPEED[spec.speed]), pick(_BACKGROUND[spec.background_style]), pick(_FRAMING)]
    order = rng.permutation(len(rest))
    return " ".join([subject] + [rest[i].format(**fields) for i in order])


def sample_key(index: int) -> str:
    return f"synth-{index:06d}"


def generate_sample(index: int, seed: int, image_fraction: float = 0.0) -> dict[str, Any]:
    """Sample ``index`` of the set made with ``seed``: ``__key__``, ``mp4`` or ``png``, ``txt``, ``json``."""
    rng = np.random.default_rng([int(seed), int(index)])
    spec = draw_spec(rng, image_fraction)
    frames = render_frames(spec)  # (T, H, W, 3)
    meta = {"width": spec.width, "height": spec.height, "fps": spec.fps, "num_frames": spec.num_frames,
            "duration": round(spec.num_frames / spec.fps, 6) if spec.fps else 0.0, "source": "synthetic",
            "attributes": spec.attributes, "captions": {"long": long_caption(spec, rng)}}
    media = {"png": encode_png(frames[0])} if spec.still else {"mp4": encode_mp4(frames, spec.fps)}
    return {"__key__": sample_key(index), **media, "txt": short_caption(spec), "json": meta}


# --- a whole set ---------------------------------------------------------------------------------

_CONTENT_ARGS = ("num_samples", "seed", "val_fraction", "image_fraction", "shard_size", "recipe_version")


def check_arguments(num_samples: int, seed: int, val_fraction: float, image_fraction: float,
                    shard_size: int, workers: int = 1) -> None:
    """Raise ValueError naming the bad option and what to pass instead."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"--num-samples must be a whole number >= 1, got {num_samples!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a whole number >= 0, got {seed!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction!r}")
    if not 0.0 <= image_fraction <= 1.0:
        raise ValueError(f"--image-fraction must be in [0, 1], got {image_fraction!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"--shard-size must be a whole number >= 1 (samples per shard), got {shard_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a whole number >= 1, got {workers!r}")


def split_indices(num_samples: int, val_fraction: float) -> dict[str, list[int]]:
    """The last ``round(num_samples * val_fraction)`` indices (at least one when asked for any) are val."""
    num_val = round(num_samples * val_fraction)
    if val_fraction > 0 and num_samples >= 2:
        num_val = min(max(num_val, 1), num_samples - 1)
    num_val = min(num_val, num_samples - 1)
    cut = num_samples - num_val
    return {"train": list(range(cut)), "val": list(range(cut, num_samples))}


def _write_shard(path: str, indices: list[int], seed: int, image_fraction: float,
                 on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    from videogen.data.writer import TarShardWriter

    with TarShardWriter(path) as writer:
        for index in indices:
            writer.write(generate_sample(index, seed, image_fraction))
            if on_sample is not None:
                on_sample()
    return writer.stats.to_dict()  # a plain dict: cheap to send back from a worker process


def _made_here(shard: Path) -> bool:
    """A shard this recipe wrote (its first member is a ``synth-`` sample), e.g. left by an interrupted run."""
    try:
        with tarfile.open(shard) as tar:
            first = tar.next()
    except (OSError, tarfile.TarError):
        return False
    return first is not None and first.name.startswith("synth-")


def _existing(split_dir: Path, args: dict[str, Any]) -> DatasetManifest | None:
    """The split's manifest when this recipe made it with the same content arguments and every shard
    is still there (up to date); otherwise None, after deleting what an older run of it left there.
    Raises ValueError rather than touch shards or a manifest some other tool wrote."""
    from videogen.data.manifest import DatasetManifest

    manifest = DatasetManifest.find(split_dir)
    if manifest is not None:
        made = manifest.created_by
        if made.get("command") != "make-synthetic":
            raise ValueError(f"{split_dir / 'dataset.json'} was written by {made.get('command')!r}, not "
                             f"make-synthetic: pass another --out folder")
        same = all(made.get("args", {}).get(k) == args[k] for k in _CONTENT_ARGS)
        if same and all((split_dir / s.name).is_file() and (split_dir / s.name).stat().st_size == s.size_bytes
                        for s in manifest.shards):
            return manifest
    shards = sorted(split_dir.glob("*.tar")) if split_dir.is_dir() else []
    foreign = [p.name for p in shards if not _made_here(p)]
    if foreign:
        raise ValueError(f"{split_dir} holds shards this recipe did not write ({foreign[0]}, ...): pass an empty "
                         f"--out folder or delete them")
    for shard in shards:  # stale (other arguments) or from an interrupted run: ours to replace
        shard.unlink()
    if manifest is not None:
        (split_dir / "dataset.json").unlink()
    return None


def write_synthetic(out_dir: str | Path, num_samples: int, seed: int, val_fraction: float = 0.1,
                    image_fraction: float = 0.0, shard_size: int = 32, workers: int = 1,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Write the set to ``out_dir/train`` and ``out_dir/val`` (shards + ``dataset.json`` each).

    A split already written by this recipe with the same arguments is kept as it is. Returns, per
    split, ``{"dir", "samples", "shards", "seconds", "skipped"}`` (``skipped``: it was up to date).
    """
    from tqdm import tqdm

    from videogen.data.manifest import DatasetManifest, ShardStats, provenance
    from videogen.data.writer import numbered_shard_name

    check_arguments(num_samples, seed, val_fraction, image_fraction, shard_size, workers)
    out_dir = Path(out_dir)
    args = {"out": str(out_dir), "num_samples": num_samples, "seed": seed, "val_fraction": val_fraction,
            "image_fraction": image_fraction, "shard_size": shard_size, "workers": workers,
            "recipe_version": RECIPE_VERSION}
    summary: dict[str, dict[str, Any]] = {}
    for split, indices in split_indices(num_samples, val_fraction).items():
        split_dir = out_dir / split
        began = time.perf_counter()
        kept = _existing(split_dir, args)
        if kept is not None or not indices:
            summary[split] = {"dir": str(split_dir), "samples": kept.num_samples if kept else 0,
                              "shards": len(kept.shards) if kept else 0, "seconds": 0.0, "skipped": True}
            continue
        chunks = [indices[i:i + shard_size] for i in range(0, len(indices), shard_size)]
        paths = [str(split_dir / numbered_shard_name(j)) for j in range(len(chunks))]
        bar = tqdm(total=len(indices), desc=f"make-synthetic {split}", unit="sample", disable=not progress)
        with bar:
            if workers == 1:
                stats = [_write_shard(p, c, seed, image_fraction, lambda: bar.update(1)) for p, c in zip(paths, chunks)]
            else:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    futures = [pool.submit(_write_shard, p, c, seed, image_fraction) for p, c in zip(paths, chunks)]
                    stats = []
                    for future, chunk in zip(futures, chunks):
                        stats.append(future.result())
                        bar.update(len(chunk))
        manifest = DatasetManifest(shards=[ShardStats.from_dict(s) for s in stats],
                                   created_by=provenance("make-synthetic", args))
        manifest.save(split_dir)
        summary[split] = {"dir": str(split_dir), "samples": manifest.num_samples, "shards": len(stats),
                          "seconds": round(time.perf_counter() - began, 3), "skipped": False}
    return summary
