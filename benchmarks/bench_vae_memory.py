"""Peak memory of ``videogen eval-vae`` with its defaults on a 1280x720 x 132-frame clip (issue 14).

Builds (once, under --work) a random-init VAE export with the model of configs/vae/quickstart.yaml
(random weights: the memory does not depend on training) and a one-clip shard of synthetic moving
colour fields at 1280x720, 132 frames, H.264; then runs ``videogen eval-vae --vae ... --data ...``
with no memory options in a subprocess under an address-space limit (RLIMIT_AS, so a run that
would outgrow the machine fails with an allocation error instead of waking the OOM killer) and
prints the child's peak resident memory (ru_maxrss).

    flock -x /tmp/videogen-cpu.lock python benchmarks/bench_vae_memory.py --work /tmp/vae-mem
    ... --repo /path/to/another/checkout   # the same measurement with another checkout's code
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml

WIDTH, HEIGHT, FRAMES, FPS = 1280, 720, 132, 24


def make_clip(path: Path) -> None:
    import av

    buf = io.BytesIO()
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "20", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(FRAMES):
            phase = 2 * np.pi * i / FRAMES
            rgb = np.stack([np.sin(xx / 97 + phase), np.cos(yy / 53 - 2 * phase), np.sin((xx + yy) / 71 + 3 * phase)],
                           axis=-1)
            frame = av.VideoFrame.from_ndarray(((rgb + 1) * 127.5).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    members = {"mp4": buf.getvalue(), "txt": b"moving colour fields",
               "json": json.dumps({"width": WIDTH, "height": HEIGHT, "num_frames": FRAMES, "fps": FPS}).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"clip720.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_vae(folder: Path, repo: Path) -> None:
    sys.path.insert(0, str(repo))
    import torch

    from videogen.models.vae import VideoAutoencoder
    from videogen.pretrained import save_export

    cfg = yaml.safe_load((repo / "configs/vae/quickstart.yaml").read_text())["model"]["init_args"]["vae"]["init_args"]
    torch.manual_seed(0)
    vae = VideoAutoencoder(**cfg)
    save_export(folder, vae, stats={"temporal_compression": vae.temporal_compression,
                                    "spatial_compression": vae.spatial_compression})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/vae-mem"))
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="checkout whose code runs")
    ap.add_argument("--limit-gb", type=float, default=12.0, help="RLIMIT_AS of the child (default 12 GB)")
    ap.add_argument("extra", nargs="*", help="more eval-vae options after --")
    args = ap.parse_args()
    shard, vae = args.work / "data" / "shard-000000.tar", args.work / "vae"
    if not shard.exists():
        make_clip(shard)
    if not vae.exists():
        make_vae(vae, Path(__file__).resolve().parents[1])
    limit = int(args.limit_gb * 2**30)
    env = {**os.environ, "PYTHONPATH": str(args.repo), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "videogen.cli", "eval-vae", "--vae", str(vae), "--data", str(shard.parent),
           "--json", "--no-progress", "--device", "cpu", *args.extra]
    began = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.repo,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    out = {"repo": str(args.repo), "rc": proc.returncode, "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
           "limit_as_gb": args.limit_gb, "extra": args.extra}
    if proc.returncode == 0:
        rep = json.loads(proc.stdout)
        clip = rep["clips"][0]
        out.update(psnr=round(rep["psnr"], 2), frames=clip["frames"], chunk_frames=clip.get("chunk_frames"),
                   tile=clip.get("tile"))
    else:
        out["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1][:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
