"""On a real SLURM cluster (two logical nodes on this host): docker/slurm/curate_array.sbatch scores
the shards as a two-task job array, one group each, and the merge run that follows finds every shard
scored and writes exactly what one `videogen curate` run writes."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "curation"))

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TEMPLATE = Path(__file__).parents[2] / "docker" / "slurm" / "curate_array.sbatch"
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}


def test_array_tasks_score_their_groups_and_the_merge_writes_the_set(slurm, tmp_path):
    from data_recipes.curate import CurateOptions, curate
    from data_recipes.curate.testset import write_curation_set

    src, out = tmp_path / "src", tmp_path / "curated"
    write_curation_set(src, num_clips=12, seed=0, shard_size=3)  # 4 shards: 2 per array task
    slurm.env = {**slurm.env, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                 "OMP_NUM_THREADS": "1"}
    # the template's resources scaled to this host; its array size given here (2 tasks)
    job = slurm.run("sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--mem=1500", "--time=10",
                    f"--chdir={tmp_path}", f"--output={tmp_path}/task-%a.out", str(TEMPLATE),
                    "--data", str(src), "--out", str(out)).stdout.strip().split(";")[0]
    for task in (0, 1):
        state = slurm.wait_state(f"{job}_{task}", DONE, timeout=240)
        log = (tmp_path / f"task-{task}.out").read_text(errors="replace") if (tmp_path / f"task-{task}.out").exists() \
            else "(no output)"
        assert state == "COMPLETED", log
        assert f"array task {task} of 2" in log
    scored = sorted(p.name for p in (out / ".curate" / "scored").glob("*.done.json"))
    assert scored == [f"shard-00000{i}.done.json" for i in range(4)]
    assert not (out / "dataset.json").exists()  # the array only scores
    merged = curate(str(src), out, CurateOptions(), progress=False, histograms=False)  # the merge
    assert merged["timing"]["shards_scored_now"] == 0
    ref = curate(str(src), tmp_path / "one-run", CurateOptions(), progress=False, histograms=False)
    assert merged["samples"] == ref["samples"]
    assert [p.read_bytes() for p in sorted(out.glob("*.tar"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "one-run").glob("*.tar"))]
