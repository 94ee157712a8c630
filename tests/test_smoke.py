"""The smoke preset (configs/pipeline/smoke.yaml): the quickstart's chain at a tiny size, run as a user
runs it, in a fresh folder. Every stage's export, the latent cache, the sample mp4s and the scorecard
exist; the scorecard holds every figure beside its target and says "below target" (a smoke model
learns nothing), which the smoke pipeline reports without failing and a strict scorecard fails on."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videogen.evaluation.scorecard import TARGETS

ROOT = Path(__file__).resolve().parents[1]


def videogen(args, cwd, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "videogen.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_smoke_preset_runs_the_whole_chain(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    done = videogen(["pipeline", "--config", "configs/pipeline/smoke.yaml"], tmp_path, 800)
    log = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, log
    steps = yaml.safe_load((ROOT / "configs/pipeline/smoke.yaml").read_text())["steps"]
    assert [s["name"] for s in steps] == ["data", "heldout", "captioner-data", "vae", "captioner", "recaption",
                                          "encode", "dit", "samples", "score"]

    for stage in ("vae", "captioner", "dit"):  # every export, trained the smoke budget
        export = tmp_path / f"runs/{stage}/smoke/export"
        assert {p.name for p in export.iterdir()} >= {"config.yaml", "model.safetensors", "stats.json", "manifest.json"}
        assert json.loads((export / "manifest.json").read_text())["inputs"]["global_step"] == 12
    dit_stats = json.loads((tmp_path / "runs/dit/smoke/export/stats.json").read_text())
    vae_manifest = json.loads((tmp_path / "runs/vae/smoke/export/manifest.json").read_text())
    assert dit_stats["vae"]["weights_sha256"] == vae_manifest["weights_sha256"]  # the DiT trained on this VAE
    for shards in ("data/smoke-recaptioned/train", "data/smoke-latents/train"):
        assert json.loads((tmp_path / shards / "dataset.json").read_text())["num_samples"] > 0
    assert "[progress] DiTModule: step 8/12 (66.7%)" in done.stdout and "steps/min" in done.stdout  # the ETA lines

    from videogen.data.decode import PyAVDecoder

    samples = sorted((tmp_path / "runs/pipeline/smoke/samples").glob("*.mp4"))
    assert len(samples) == 4
    info = PyAVDecoder().probe(samples[0].read_bytes())
    assert (info.num_frames, info.height, info.width) == (5, 32, 48)

    card_path = tmp_path / "runs/pipeline/smoke/scorecard.json"
    card = json.loads(card_path.read_text())
    rows = {r["key"]: r for r in card["figures"]}
    assert list(rows) == [t.key for t in TARGETS]
    for t in TARGETS:
        assert rows[t.key]["target"] == t.minimum and rows[t.key]["unit"] == t.unit
        assert isinstance(rows[t.key]["value"], float), t.key  # every figure measured
    assert 0 < rows["vae_psnr"]["value"] < 30  # a 12-step VAE reconstructs something, far from the target
    assert card["passed"] is False and len(card["misses"]) == sum(r["passed"] is False for r in card["figures"]) > 0
    assert card["misses"][0].startswith("VAE PSNR ") and card["misses"][0].endswith(
        "train the VAE longer: --trainer.max_steps=100 --model.init_args.lr_scheduler.init_args.decay=100 (set both in "
        "configs/vae/smoke.yaml; it trained 12 steps), then rerun")
    assert card["details"]["t2v"]["n"] == 6 and card["details"]["recaption"]["num_captions"] == 6
    assert card["details"]["vae"]["num_clips"] == 6
    assert {s: card["stages"][s]["steps"] for s in ("vae", "captioner", "dit")} == {"vae": 12, "captioner": 12, "dit": 12}
    assert "[pipeline] output: runs/pipeline/smoke/scorecard.json" in done.stdout
    assert "below target:" in done.stdout and "train the VAE longer: --trainer.max_steps=100" in done.stdout

    # the same scorecard without --no-fail: exit 1 ("below target"), shown again from the card (no new measurement)
    score = shlex.split(steps[-1]["run"])
    strict = [a for a in score if a != "--no-fail"]
    again = videogen(strict, tmp_path, 300)
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "shown again" in again.stderr and "below target:" in again.stdout
    assert json.loads(card_path.read_text())["measured_at"] == card["measured_at"]

    # ... and a pipeline ending in it exits with its status, the way `make quickstart` does
    cfg = yaml.safe_load((ROOT / "configs/pipeline/smoke.yaml").read_text())
    cfg["steps"][-1]["run"] = shlex.join(strict)
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(cfg))
    failed = videogen(["pipeline", "--config", "strict.yaml"], tmp_path, 300)
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert failed.stdout.count("skipped") == len(steps) - 1 and "[pipeline] score failed (exit 1)" in failed.stdout
    assert json.loads(card_path.read_text())["figures"] == card["figures"]  # the card, not a stamp, is at its path

    # options the smoke models cannot sample at are refused before anything is measured
    bad = videogen([*strict[:strict.index("--shape")], "--shape", "4", "32", "48", "--out", "x.json"], tmp_path, 300)
    assert bad.returncode == 2 and "--shape 4 32 48: this DiT and VAE sample 1 + k*2 frames" in bad.stderr
    assert not (tmp_path / "x.json").exists()
