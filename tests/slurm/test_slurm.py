"""On a real SLURM cluster (two logical nodes on this host, started by the fixture): the multi-node
sbatch template trains with DDP over gloo, one rank per node; SIGUSR1 makes videogen's Preemption
callback save an HPC checkpoint at the next batch boundary and requeue the job, and the rerun resumes
from that checkpoint's step, whatever --ckpt_path the job was started with."""

import json
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


def sbatch(slurm: LocalSlurm, tmp_path: Path, config: Path, *fit_args: str) -> str:
    # the template's resources scaled to this host: 1 task (= 1 CPU rank) on each of 2 nodes
    cmd = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=1500",
           "--time=10", f"--chdir={tmp_path}", f"--output={tmp_path}/job-%j.out",
           str(job_script(tmp_path)), "--config", str(config), *fit_args]
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


def initial_checkpoint(tmp_path: Path, cfg: Path) -> Path:
    """A checkpoint of this config at step 2, from a 2-rank DDP run outside SLURM: what a user resumes from."""
    import yaml

    from launch import run_fit

    first = yaml.safe_load(cfg.read_text())
    first["trainer"].update(devices=2, max_steps=2, enable_checkpointing=True, default_root_dir=str(tmp_path / "first"))
    first["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(tmp_path / "first"), "save_last": True}},
        {"class_path": "recorder.RankRecorder", "init_args": {"out": str(tmp_path / "first" / "records")}}]
    path = tmp_path / "first.yaml"
    path.write_text(yaml.safe_dump(first, sort_keys=False))
    run_fit(path)
    assert torch.load(tmp_path / "first" / "last.ckpt", weights_only=True)["global_step"] == 2
    return tmp_path / "first" / "last.ckpt"


def test_sigusr1_checkpoints_at_a_batch_boundary_requeues_and_resumes_from_it(slurm, tmp_path):
    """Real steps (no sleep): SIGUSR1 lands wherever a rank is, in a step or in a gradient all-reduce.
    Lightning's own handler saved inside the signal handler (a barrier), which could pair with the
    other rank's all-reduce and hang the job until its time limit (``job N is RUNNING ... after
    240 s``, Lightning-AI/pytorch-lightning#21406); videogen's Preemption callback saves at the next
    batch boundary on both ranks. The job was started with an explicit --ckpt_path (passed again by
    the template on the rerun) and two older HPC checkpoints lie in its folder: the rerun resumes from
    the new HPC checkpoint anyway, and the oldest one is pruned."""
    write_shards(tmp_path / "shards", [4, 4])
    steps = 200
    cfg = fit_config(tmp_path / "vae.yaml", tiny_vae_model(), data_section(tmp_path / "shards"), tmp_path,
                     devices=1, max_steps=steps)
    initial = initial_checkpoint(tmp_path, cfg)
    root = tmp_path / "root"
    root.mkdir()
    for n in (1, 2):  # left by earlier requeues
        (root / f"hpc_ckpt_{n}.ckpt").write_bytes(initial.read_bytes())
    job = sbatch(slurm, tmp_path, cfg, f"--ckpt_path={initial}")
    progress = tmp_path / "records" / "progress-rank0"
    deadline = time.time() + 300  # two ranks starting torch on a loaded host: generous, but bounded
    while not (progress.exists() and int(progress.read_text() or 0) >= 5):
        assert time.time() < deadline, f"job {job} made no progress\n{job_output(tmp_path, job)}"
        assert slurm.job_field(job, "JobState") in ("PENDING", "RUNNING", "CONFIGURING"), job_output(tmp_path, job)
        time.sleep(0.1)
    slurm.run("scancel", "--signal=USR1", job)  # what --signal=SIGUSR1@90 sends before the time limit
    state = slurm.wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, timeout=480)
    out = job_output(tmp_path, job)
    assert state == "COMPLETED", out
    assert slurm.job_field(job, "Restarts") == "1", out
    hpc = root / "hpc_ckpt_3.ckpt"
    assert hpc.exists(), out
    assert sorted(p.name for p in root.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_2.ckpt", "hpc_ckpt_3.ckpt"]  # pruned
    saved_step = torch.load(hpc, weights_only=True, map_location="cpu")["global_step"]
    assert 5 <= saved_step < steps, saved_step
    first0, first1 = (json.loads((tmp_path / "records" / f"rank{r}-progress.json").read_text()) for r in (0, 1))
    assert first0 == first1 == {"start_step": 2, "last_step": saved_step}  # from --ckpt_path; stopped at the save
    r0, r1 = records(tmp_path, run=1)  # the rerun: SLURM_RESTART_COUNT=1
    for r in (r0, r1):
        assert r["restart_count"] == "1" and r["slurm_job_id"] == job
        assert r["ckpt_path"] == str(hpc) and r["start_step"] == saved_step  # not the --ckpt_path it was given
        assert r["end_step"] == steps
    assert {r0["slurm_nodename"], r1["slurm_nodename"]} == {"n1", "n2"}
    assert r0["weights_at_end"] == r1["weights_at_end"]
    assert not records(tmp_path, run=0)  # the first run never reached its end
    full = (tmp_path / f"job-{job}.out").read_text(errors="replace")  # --open-mode=append keeps both runs
    assert f"job {job} restart 0" in full and f"job {job} restart 1" in full
    assert f"SLURM's requeue signal at step {saved_step}: saved {hpc}" in full
    assert f"resuming from {hpc} (the newest HPC checkpoint), not ckpt_path={initial}" in full
