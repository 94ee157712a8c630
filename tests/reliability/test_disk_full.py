"""A full disk while writing shards (simulated with RLIMIT_FSIZE in a child process, SIGXFSZ ignored
so a write past the limit fails with EFBIG as on a full disk): the error names the shard, the shards
finished before it stay complete and readable, and no partial file is left under a final name.
(Checkpoints under a full disk: tests/reliability/test_checkpoints.py.)"""

import subprocess
import sys
import tarfile

from reliability_helpers import ROOT, child_env

CHILD = r"""
import os, resource, signal, sys
from videogen.data.writer import ShardSequenceWriter
out = sys.argv[1]
payload = os.urandom(3000)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    with ShardSequenceWriter(out, max_count=3) as w:
        for i in range(12):
            if i == 7:  # two shards are complete and a third begun; now no file may grow past 5 kB: a full disk
                resource.setrlimit(resource.RLIMIT_FSIZE, (5000, resource.RLIM_INFINITY))
            w.write({"__key__": f"k{i:03d}", "bin": payload, "txt": f"caption {i}"})
except OSError as e:
    print("ERROR:", e)
    sys.exit(3)
"""


def test_disk_full_while_writing_shards_fails_loudly_and_keeps_finished_shards(tmp_path):
    out = tmp_path / "shards"
    run = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, env=child_env(),
                         cwd=str(ROOT), timeout=120)
    assert run.returncode == 3, run.stdout + run.stderr[-2000:]
    assert f"could not write shard {out / 'shard-000002.tar'}" in run.stdout and "disk full" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]  # no .tmp left
    for i, shard in enumerate(sorted(out.iterdir())):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        assert names == [f"k{k:03d}.{ext}" for k in range(3 * i, 3 * i + 3) for ext in ("bin", "txt")]
