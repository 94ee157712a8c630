"""benchmarks/eval_conditioning.py cannot rot: ``--tiny`` runs every mode end to end on tiny random
exports it builds, and the numbers it reports are the ones its definitions give."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_tiny_run_reports_every_mode_against_its_floor(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import eval_conditioning

    out = tmp_path / "eval_conditioning.json"
    result = eval_conditioning.main(["--tiny", "--out", str(out)])
    assert json.loads(out.read_text())["summary"] == result["summary"]
    records, summary = result["records"], result["summary"]
    modes = ["image", "extend", "connect", "edit"] + [f"guidance/cfg{c}" for c in (1, 2, 4, 7)]
    assert list(records) == modes and all(len(records[m]) == 2 for m in modes)
    assert set(summary) == set(modes) | {"text"} and summary["text"] == summary["guidance/cfg4"]
    for r in records["image"]:  # frame 0 is the given latent, decoded: exactly the VAE's own reconstruction
        assert r["frame0_psnr"] == pytest.approx(r["vae_frame0_psnr"], abs=1e-6)
    for r, image in zip(records["connect"], records["image"]):  # the same frame-0 latent, encoded in place
        assert r["first_psnr"] == pytest.approx(image["frame0_psnr"], abs=1e-6)
    for r, s in zip(records["edit"], eval_conditioning.held_out_samples(2, 3)):
        old = s["json"]["attributes"]["colour"]
        assert old not in r["prompt"].split() and eval_conditioning.other_colour(s["json"]["attributes"]) in r["prompt"]
    assert summary["extend"]["seam_psnr_gap"] == pytest.approx(
        abs(summary["extend"]["seam_psnr"] - summary["extend"]["real_seam_psnr"]))
    printed = capsys.readouterr().out
    assert "seam_psnr_gap" in printed and ">= 30" in printed and "<= 2" in printed
    assert result["process"] == "rectified_flow" and result["num_clips"] == 2


@pytest.mark.slow
def test_modes_pick_what_runs_and_the_end_fit_brings_connect_to_its_last_frame(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import eval_conditioning

    runs = {steps: eval_conditioning.main(["--tiny", "--modes", "connect", "image", "--fit-end-steps", str(steps),
                                           "--out", str(tmp_path / f"fit{steps}.json")]) for steps in (0, 50)}
    for result in runs.values():
        assert list(result["records"]) == ["image", "connect"] and set(result["summary"]) == {"image", "connect"}
    held, fitted = (runs[s]["summary"]["connect"] for s in (0, 50))
    assert fitted["last_psnr"] > held["last_psnr"] + 0.3  # the fit moves only the end
    assert fitted["first_psnr"] == held["first_psnr"] and fitted["vae_last_psnr"] == held["vae_last_psnr"]
    assert runs[0]["fit_end_steps"] == 0 and runs[50]["fit_end_steps"] == 50
