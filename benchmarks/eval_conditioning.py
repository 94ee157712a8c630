"""Does a trained DiT follow its given frames and its guidance? Image-to-video, extend, connect, edit and a
guidance sweep on held-out synthetic clips, judged from pixels (issue 14's acceptance).

Clips are the moving clips of a synthetic set made with a seed no stage trained on (training used 0,
the held-out prompts 1, the captioner 2), drawn exactly as `videogen make-synthetic --seed S` draws
them, resized to the sampling shape (cover, centre crop) with their frames spread over the whole clip
(as the quickstart's ``span_clip`` trains). Each output is judged with the synthetic set's own judge
(`videogen.evaluation.judge.judge_clip`), as `eval_dit_attributes.py` does:

* ``image``: the clip's first frame and its caption: frame 0 PSNR against the given frame, the
  object's colour kept, motion in the captioned direction;
* ``extend``: the first 2 latent frames given: the direction continued (judged from the last given
  frame on), the seam (PSNR between the last given and the first generated frame) against the same
  PSNR between those two frames of the real clip;
* ``connect``: the clip's first and last frames: both endpoint PSNRs (the last latent fitted to the end
  frame through the decoder, ``--fit-end-steps``; the VAE's own reconstruction of the last frame beside
  them), the object travels between them in the captioned direction;
* ``edit``: SDEdit at strength 0.5 from the clip with its caption's colour replaced by another: the
  new colour's share;
* ``guidance``: text-to-video at cfg 1, 2, 4, 7 (colour and direction); ``text`` is the sweep's
  ``--cfg`` row, held against the text-to-video floors.

    .venv/bin/python benchmarks/eval_conditioning.py --dit runs/dit/quickstart/export \
        --vae runs/vae/quickstart/export --num-clips 60 --out benchmarks/out/eval_conditioning.json

``--modes`` measures only some modes; ``--tiny`` runs them end to end on tiny random exports it builds (the
test path, seconds).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from eval_dit_attributes import held_out_samples, to_pixels  # noqa: E402

MODES = ("image", "extend", "connect", "edit", "guidance")
# (mode, metric) -> (comparison, floor) from issue 14's acceptance; None: reported, no floor
FLOORS = {
    ("image", "frame0_psnr"): (">=", 30.0), ("image", "colour_kept"): (">=", 0.95),
    ("image", "direction"): (">=", 0.85),
    ("extend", "direction"): (">=", 0.90), ("extend", "seam_psnr_gap"): ("<=", 2.0),
    ("connect", "first_psnr"): (">=", 28.0), ("connect", "last_psnr"): (">=", 28.0),
    ("connect", "travels"): (">=", 0.85),
    ("edit", "new_colour"): (">=", 0.80),
    ("text", "colour"): (">=", 0.95), ("text", "direction"): (">=", 0.85),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dit", default="runs/dit/quickstart/export", help="DiT export folder (or checkpoint)")
    parser.add_argument("--vae", default="runs/vae/quickstart/export",
                        help="VAE export folder: must be the one the DiT was trained with (weights hash checked)")
    parser.add_argument("--num-clips", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3, help="synthetic seed of the held-out clips (no stage trains on 3)")
    parser.add_argument("--shape", type=int, nargs=3, default=(9, 64, 96), metavar=("FRAMES", "H", "W"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0, help="guidance of the conditioned modes and the text row")
    parser.add_argument("--cfgs", type=float, nargs="+", default=(1.0, 2.0, 4.0, 7.0), help="the guidance sweep")
    parser.add_argument("--strength", type=float, default=0.5, help="edit: SDEdit strength")
    parser.add_argument("--null-branch", choices=["caption", "zeros"], default="caption",
                        help="guidance's unconditional input: the encoded NULL_CAPTION caption dropout trains "
                             "(default), or zero tokens with an all-False mask, the untrained input sampling used "
                             "before issue 14's fix 1 (for the before row of the guidance sweep)")
    parser.add_argument("--fit-end-steps", type=int, default=50,
                        help="connect: steps fitting the last latent to the end frame through the decoder (0: the "
                             "held-end encoding as it is, the before row)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES,
                        help="the modes to measure (default all; guidance: the cfg sweep and the text row)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/out/eval_conditioning.json")
    parser.add_argument("--tiny", action="store_true", help="tiny random exports, 2 clips, 2 steps (the test path)")
    return parser.parse_args(argv)


def tiny_exports(folder: Path) -> tuple[Path, Path]:
    """A tiny random VAE export and a DiT export trained on nothing that names it (the real text encoder)."""
    from videogen.models.dit import DiT
    from videogen.models.vae import VideoAutoencoder
    from videogen.modules.dit import DiTModule
    from videogen.pretrained import save_export

    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    vae_dir = save_export(folder / "vae", vae, {"latent_channels": 4, "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4,
                                                "temporal_compression": 4, "spatial_compression": 4})
    dit = DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=384, frame_conditioning=True)
    module = DiTModule(dit, vae=str(vae_dir), text_max_length=16, ema_decay=None)
    return save_export(folder / "dit", module.dit, module.export_stats()), vae_dir


def clip_tensor(sample: dict, frames: int, height: int, width: int) -> torch.Tensor:
    """A synthetic sample's mp4 -> (1, 3, frames, H, W) in [-1, 1], frames spread over the whole clip."""
    from videogen.commands.sample import _fit
    from videogen.data.decode import PyAVDecoder

    decoder = PyAVDecoder()
    total = decoder.probe(sample["mp4"]).num_frames
    indices = np.linspace(0, total - 1, frames).round().astype(int).tolist()
    return _fit(decoder.decode(sample["mp4"], indices), height, width)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def other_colour(attributes: dict) -> str:
    """Another object colour that the synthetic set draws on this clip's background."""
    from videogen.evaluation.synthetic_world import BACKGROUNDS, COLOURS

    names = list(COLOURS)
    start = names.index(attributes["colour"])
    clashes = BACKGROUNDS[attributes["background"]].clashes
    return next(c for c in names[start + 1:] + names[:start] if c not in clashes)


class Bench:
    """The loaded exports and the one sampling call every mode goes through."""

    def __init__(self, args: argparse.Namespace):
        from videogen.text_encoding import NULL_CAPTION
        from videogen.pipelines.video import load_trained_dit

        try:
            trained = load_trained_dit(args.dit, vae=args.vae)
        except ValueError as e:  # the VAE is not the DiT's
            raise SystemExit(f"eval_conditioning: {e}") from None
        self.stats = trained.stats
        self.device = torch.device(args.device)
        self.dit, self.vae = trained.dit.to(self.device).eval(), trained.vae_export.module.to(self.device).eval()
        self.text_encoder = trained.text_encoder.to(self.device)
        self.null = [x.to(self.device) for x in self.text_encoder([NULL_CAPTION])]
        if args.null_branch == "zeros":
            self.null = [torch.zeros_like(x) for x in self.null]
        self.args = args
        self.latent_frames = 1 + (args.shape[0] - 1) // self.stats["temporal_compression"]

    def sample(self, prompts: list[str], cfg: float, seed: int, **kw) -> list[np.ndarray]:
        from videogen.pipelines.video import generate, sampling_kwargs

        text, mask = self.text_encoder(prompts)
        frames, height, width = self.args.shape
        videos = generate(self.dit, self.vae, self.stats, text.to(self.device), mask.to(self.device), *self.null,
                          num_frames=frames, height=height, width=width, steps=self.args.steps, cfg=cfg, seed=seed,
                          fit_end_steps=self.args.fit_end_steps, **sampling_kwargs(self.stats), **kw)
        return [to_pixels(v) for v in videos]


def evaluate_chunk(bench: Bench, chunk: list[dict], seed: int) -> dict[str, list[dict]]:
    """Every mode's per-clip records for a few clips sampled together."""
    from videogen.encoding import denormalize_latents, encode_latents, normalize_latents
    from videogen.evaluation.judge import judge_clip
    from videogen.pipelines.video import conditioning_from_video, connect_frames

    a, stats, vae = bench.args, bench.stats, bench.vae
    clips = torch.cat([clip_tensor(s, *a.shape) for s in chunk]).to(bench.device)
    real = [to_pixels(c) for c in clips]
    want = [s["json"]["attributes"] for s in chunk]
    prompts = [s["json"]["captions"]["long"] for s in chunk]
    lf, tc = bench.latent_frames, stats["temporal_compression"]
    out: dict[str, list[dict]] = {}

    init = normalize_latents(encode_latents(vae, clips), stats)  # the clips as training encodes them
    recon = [to_pixels(v) for v in vae.decode(denormalize_latents(init, stats)).clamp(-1, 1)]  # the VAE's ceiling
    if "image" in a.modes:
        cond = conditioning_from_video(vae, stats, clips, "image", lf)
        out["image"] = [{"frame0_psnr": psnr(px[0], r[0]), "vae_frame0_psnr": psnr(rc[0], r[0]),
                         "colour_kept": judge_clip(px).get("colour") == w["colour"],
                         "direction": judge_clip(px).get("direction") == w["direction"]}
                        for px, r, rc, w in zip(bench.sample(prompts, a.cfg, seed, cond=cond), real, recon, want)]

    if "extend" in a.modes:
        given = min(2, lf - 1)
        seam = (given - 1) * tc  # the last given pixel frame
        cond = conditioning_from_video(vae, stats, clips, "extend", lf, given=given)
        out["extend"] = [{"direction": judge_clip(px[seam:]).get("direction") == w["direction"],
                          "seam_psnr": psnr(px[seam], px[seam + 1]), "real_seam_psnr": psnr(r[seam], r[seam + 1])}
                         for px, r, w in zip(bench.sample(prompts, a.cfg, seed, cond=cond), real, want)]

    if "connect" in a.modes:
        cond = connect_frames(vae, stats, clips[:, :, :1], clips[:, :, -1:], lf)
        out["connect"] = [{"first_psnr": psnr(px[0], r[0]), "last_psnr": psnr(px[-1], r[-1]),
                           "vae_last_psnr": psnr(rc[-1], r[-1]),
                           "travels": judge_clip(px).get("direction") == w["direction"]}
                          for px, r, rc, w in zip(bench.sample(prompts, a.cfg, seed, cond=cond), real, recon, want)]

    if "edit" in a.modes:
        new = [other_colour(w) for w in want]
        edited = [re.sub(rf"\b{w['colour']}\b", c, p) for p, w, c in zip(prompts, want, new)]
        out["edit"] = [{"new_colour": judge_clip(px).get("colour") == c, "prompt": p}
                       for px, c, p in zip(bench.sample(edited, a.cfg, seed, init=init, strength=a.strength), new,
                                           edited)]

    for cfg in a.cfgs if "guidance" in a.modes else ():
        out[f"guidance/cfg{cfg:g}"] = [
            {"colour": judge_clip(px).get("colour") == w["colour"],
             "direction": judge_clip(px).get("direction") == w["direction"]}
            for px, w in zip(bench.sample(prompts, cfg, seed), want)]
    for records, s in zip(zip(*out.values()), chunk):
        for r in records:
            r["key"] = s["__key__"]
    return out


def summarise(records: dict[str, list[dict]], cfg: float) -> dict[str, dict[str, float]]:
    def mean(mode, key):
        return float(np.mean([float(r[key]) for r in records[mode]]))

    summary = {mode: {k: mean(mode, k) for k, v in rows[0].items() if isinstance(v, (bool, float))}
               for mode, rows in records.items()}
    if "extend" in summary:
        summary["extend"]["seam_psnr_gap"] = abs(summary["extend"]["seam_psnr"] - summary["extend"]["real_seam_psnr"])
    if f"guidance/cfg{cfg:g}" in summary:
        summary["text"] = dict(summary[f"guidance/cfg{cfg:g}"])
    return summary


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [f"{'mode':<16} {'metric':<16} {'value':>8}  floor     pass"]
    for mode, metrics in summary.items():
        for key, value in metrics.items():
            op, floor = FLOORS.get((mode, key), (None, None))
            ok = "" if op is None else ("yes" if (value >= floor if op == ">=" else value <= floor) else "NO")
            shown = f"{value:8.1%}" if key in ("colour_kept", "direction", "travels", "new_colour", "colour") \
                else f"{value:8.2f}"
            lines.append(f"{mode:<16} {key:<16} {shown}  {'' if op is None else f'{op} {floor:g}':<8}  {ok}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            args.dit, args.vae = (str(p) for p in tiny_exports(Path(tmp)))
            args.num_clips, args.steps, args.shape, args.batch = 2, 2, (9, 32, 48), 2
        bench = Bench(args)
        samples = held_out_samples(args.num_clips, args.seed)
        records: dict[str, list[dict]] = {}
        began = time.perf_counter()
        for i in range(0, len(samples), args.batch):
            for mode, rows in evaluate_chunk(bench, samples[i: i + args.batch], seed=1000 + i).items():
                records.setdefault(mode, []).extend(rows)
            print(f"[eval_conditioning] {min(i + args.batch, len(samples))}/{len(samples)} clips, "
                  f"{time.perf_counter() - began:.0f} s", flush=True)
        summary = summarise(records, args.cfg)
        result = {"summary": summary, "floors": {f"{m}/{k}": f"{op} {v:g}" for (m, k), (op, v) in FLOORS.items()},
                  "num_clips": len(samples), "seed": args.seed, "shape": list(args.shape), "steps": args.steps,
                  "modes": list(args.modes), "cfg": args.cfg, "cfgs": list(args.cfgs), "strength": args.strength,
                  "null_branch": args.null_branch, "fit_end_steps": args.fit_end_steps,
                  "process": bench.stats.get("process"), "dit": args.dit, "vae": args.vae, "tiny": args.tiny,
                  "seconds": round(time.perf_counter() - began, 1), "records": records}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(samples)} held-out clips (seed {args.seed}), {args.steps} steps, cfg {args.cfg}, "
          f"null branch {args.null_branch}, connect's end fitted in {args.fit_end_steps} steps, "
          f"{result['seconds']} s -> {args.out}")
    print(table(summary))
    return result


if __name__ == "__main__":
    main()
