"""On a real SLURM cluster (two logical nodes on this host, started by the fixture): the multi-node
sbatch template trains with DDP over gloo, one rank per node; SIGUSR1 makes Lightning save an HPC
checkpoint and requeue the job, and the rerun resumes from that checkpoint's step."""

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from cluster import LocalSlurm  # noqa: E402
from launch import data_section, env, fit_config, records, tiny_vae_model, write_shards  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TEMPLATE = Path(__file__).parents[2] / "docker" / "slurm" / "multi_node.sbatch"


def job_script(tmp_path: Path) -> Path:
    """The shipped template minus its GPU request (the test cluster has no GPUs); the rest unchanged."""
    lines = [ln for ln in TEMPLATE.read_text().splitlines() if not ln.startswith("#SBATCH --gpus")]
    assert len(lines) == len(TEMPLATE.read_text().splitlines()) - 1
    path = tmp_path / "job.sbatch"
    path.write_text("\n".join(lines) + "\n")
    return path


def sbatch(slurm: LocalSlurm, tmp_path: Path, config: Path, *options: str) -> str:
    # the template's resources scaled to this host: 1 task (= 1 CPU rank) on each of 2 nodes
    cmd = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=1500",
           "--time=10", f"--chdir={tmp_path}", f"--output={tmp_path}/job-%j.out", *options,
           str(job_script(tmp_path)), "--config", str(config)]
    # node names n1/n2 do not resolve on this host: the rendezvous address is given, as the template says
    slurm.env = {**env(MASTER_ADDR="127.0.0.1"), "SLURM_CONF": slurm.env["SLURM_CONF"]}
    return slurm.run(*cmd).stdout.strip().split(";")[0]


def job_output(tmp_path: Path, job: str) -> str:
    path = tmp_path / f"job-{job}.out"
    return path.read_text(errors="replace")[-5000:] if path.exists() else "(no output)"


def test_two_nodes_train_with_ddp_and_checkpoint(slurm, tmp_path):
    write_shards(tmp_path / "shards", [3, 3])
    ckpt = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}
    cfg = fit_config(tmp_path / "vae.yaml", tiny_vae_model(), data_section(tmp_path / "shards"), tmp_path,
                     devices=1, max_steps=3, callbacks=[ckpt], enable_checkpointing=True)
    job = sbatch(slurm, tmp_path, cfg)
    state = slurm.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, timeout=180)
    assert state == "COMPLETED", job_output(tmp_path, job)
    r0, r1 = records(tmp_path)
    assert [r0["rank"], r1["rank"]] == [0, 1] and r0["world_size"] == 2
    assert r0["environment"] == r1["environment"] == "SLURMEnvironment"
    assert {r0["slurm_nodename"], r1["slurm_nodename"]} == {"n1", "n2"}  # one rank per node
    assert {r0["slurm_nodeid"], r1["slurm_nodeid"]} == {"0", "1"} and r0["pid"] != r1["pid"]
    assert r0["end_step"] == r1["end_step"] == 3 and r0["weights_at_end"] == r1["weights_at_end"]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 3 and saved["videogen"]["stage"] == "vae"


def test_sigusr1_checkpoints_requeues_and_resumes(slurm, tmp_path):
    write_shards(tmp_path / "shards", [4, 4])
    cfg = fit_config(tmp_path / "vae.yaml", tiny_vae_model(), data_section(tmp_path / "shards"), tmp_path,
                     devices=1, max_steps=30, step_sleep=0.3)  # slow steps in the first run only
    job = sbatch(slurm, tmp_path, cfg)
    progress = tmp_path / "records" / "progress-rank0"
    deadline = time.time() + 120
    while not (progress.exists() and int(progress.read_text() or 0) >= 3):
        assert time.time() < deadline, f"job {job} made no progress\n{job_output(tmp_path, job)}"
        time.sleep(0.3)
    slurm.run("scancel", "--signal=USR1", job)  # what --signal=SIGUSR1@90 sends before the time limit
    state = slurm.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, timeout=240)
    out = job_output(tmp_path, job)
    assert state == "COMPLETED", out
    assert slurm.job_field(job, "Restarts") == "1", out
    hpc = tmp_path / "root" / "hpc_ckpt_1.ckpt"
    assert hpc.exists(), out
    saved_step = torch.load(hpc, weights_only=True, map_location="cpu")["global_step"]
    assert 3 <= saved_step < 30
    r0, r1 = records(tmp_path, run=1)  # the rerun: SLURM_RESTART_COUNT=1
    for r in (r0, r1):
        assert r["restart_count"] == "1" and r["slurm_job_id"] == job
        assert r["ckpt_path"] == str(hpc) and r["start_step"] == saved_step  # resumed where it stopped
        assert r["end_step"] == 30
    assert {r0["slurm_nodename"], r1["slurm_nodename"]} == {"n1", "n2"}
    assert r0["weights_at_end"] == r1["weights_at_end"]
    assert not records(tmp_path, run=0)  # the first run never reached its end
    full = (tmp_path / f"job-{job}.out").read_text(errors="replace")  # --open-mode=append keeps both runs
    assert f"job {job} restart 0" in full and f"job {job} restart 1" in full
