"""benchmarks/gpu_acceptance.py cannot rot: ``--dry-run`` runs every case at a tiny size on the CPU in a
fresh process and writes a JSON with every case, each having run (the gpu tests skip without CUDA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_dry_run_runs_every_case(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_acceptance

    out = tmp_path / "gpu_acceptance.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--dry-run", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    expected = [name for _, name, _ in gpu_acceptance.planned(gpu_acceptance.parse_args([]))]
    assert list(result["cases"]) == expected and len(expected) == 12  # tests, 8 training steps, vae, loader, finetune
    assert [n for n, c in result["cases"].items() if not c["ok"]] == [], result["cases"]
    tests = result["cases"]["tests"]
    assert tests["failed"] == 0 and tests["skipped"] == len(tests["cases"]) >= 4  # collected, skipped on the CPU
    steps = [c for n, c in result["cases"].items() if n.startswith("mfu/")]
    assert {(c["model"], c["layout"], c["compiled"]) for c in steps} == {
        (m, lay, comp) for m in ("DiT-B", "DiT-XL") for lay in ("bucket", "pack") for comp in (False, True)}
    assert all(c["step_s"] > 0 and c["model_flops_per_step"] > 0 for c in steps)
    assert result["cases"]["vae/720p_33f"]["latent"][2] == 3  # 9 frames -> 3 latent frames, chunked and tiled
    assert result["cases"]["loader"]["same_clips_as_plan"]
    finetune = result["cases"]["finetune/wan_1.3b"]
    assert finetune["full_step_s"] > 0 and finetune["lora_step_s"] > 0
    assert 0 < finetune["lora_trainable_m"] < finetune["params_m"]  # only the adapters train
    assert "DiT-XL MFU goal" in proc.stdout and result["dry_run"] is True
