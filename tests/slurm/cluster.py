"""A real SLURM cluster of two logical nodes on this one host, for the ``slurm`` tests.

Debian's slurm-wlm is built with multiple-slurmd support: ``NodeName=n[1-2] NodeAddr=127.0.0.1
Port=[p..p+1]`` and ``slurmd -N n1`` / ``-N n2`` give two nodes, so ``srun -N2`` puts one task on
each, a real two-node job. munge (its own socket and key), slurmctld and both slurmd run from a
private folder; nothing is written to /etc, clients find the cluster through ``SLURM_CONF``.
Missing packages (munge, slurmctld, slurmd, slurm-client) are installed with apt; that needs root,
so without root (or apt) the tests are skipped with the reason. ``cred_expire=10`` with a 2 s
scheduler interval lets a requeued job start again after ~12 s instead of Slurm's default 120 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
BINARIES = ["munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "scancel", "sinfo", "squeue"]
NODES = ["n1", "n2"]


def _bin(name: str) -> str | None:
    """The program's path (daemons live in /usr/sbin, which a non-login PATH may lack)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/sbin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return None


def _have_slurm() -> bool:
    return all(_bin(b) for b in BINARIES)


def unavailable_reason() -> str | None:
    """Why this host cannot run the cluster ('' -> it can, after installing what is missing)."""
    if _have_slurm():
        return None if os.geteuid() == 0 else "the SLURM daemons run as root here and this user is not root"
    if os.geteuid() != 0:
        return "munge/slurm are not installed and installing them with apt needs root"
    if shutil.which("apt-get") is None:
        return "munge/slurm are not installed and there is no apt-get to install them"
    return None


def install() -> None:
    if _have_slurm():
        return
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stderr[-2000:]}")


def _free_port_block(n: int) -> int:
    """A base port p with p..p+n-1 all free on 127.0.0.1."""
    for base in range(20000 + os.getpid() % 5000 * 4, 40000, 7):
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports for the test cluster")


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


class LocalSlurm:
    def __init__(self, cred_expire: int = 10):
        self.base = Path(tempfile.mkdtemp(prefix="vg-slurm-", dir="/tmp"))  # short: the munge socket path
        self.base.chmod(0o755)
        self.conf = self.base / "etc" / "slurm.conf"
        self.munge = self.base / "munge"
        self.socket = self.munge / "munge.socket"
        self.cred_expire = cred_expire
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = (_bin(cmd[0]) or cmd[0], *cmd[1:])
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.logs()}")
        return proc

    def logs(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.base / "log").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def write_conf(self) -> None:
        ctld = _free_port_block(1 + len(NODES))
        host = socket.gethostname().split(".")[0]
        for d in ("etc", "run", "log", "state", *(f"spool/{n}" for n in NODES)):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""\
ClusterName=videogentest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire={self.cred_expire}
SlurmctldPort={ctld}
StateSaveLocation={self.base}/state
SlurmdSpoolDir={self.base}/spool/%n
SlurmctldPidFile={self.base}/run/slurmctld.pid
SlurmdPidFile={self.base}/run/slurmd-%n.pid
SlurmctldLogFile={self.base}/log/slurmctld.log
SlurmdLogFile={self.base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
NodeName=n[1-{len(NODES)}] NodeHostname={host} NodeAddr=127.0.0.1 Port=[{ctld + 1}-{ctld + len(NODES)}] CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        self.conf.chmod(0o644)

    def start_munge(self) -> None:
        self.munge.mkdir(parents=True, exist_ok=True)
        key = self.munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(self.munge, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        self.munge.chmod(0o755)
        key.chmod(0o400)
        self.run("runuser", "-u", "munge", "--", _bin("munged") or "/usr/sbin/munged", f"--socket={self.socket}",
                 f"--pid-file={self.munge}/munged.pid", f"--log-file={self.munge}/munged.log",
                 f"--seed-file={self.munge}/munged.seed", f"--key-file={key}")

    def start(self) -> "LocalSlurm":
        install()
        self.write_conf()
        self.start_munge()
        self.run("slurmctld", "-f", str(self.conf))
        for n in NODES:
            self.run("slurmd", "-f", str(self.conf), "-N", n)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=10).stdout.split("\n")
            if sum(line.split(" ")[-1] in ("idle", "mixed", "allocated") for line in out if line) == len(NODES):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"the test cluster's nodes did not come up in 60 s:\n{self.logs()}")

    def job_field(self, job: str, field: str) -> str | None:
        out = self.run("scontrol", "show", "job", job, check=False).stdout
        for token in out.split():
            if token.startswith(f"{field}="):
                return token.split("=", 1)[1]
        return None

    def wait_state(self, job: str, states: set[str], timeout: float) -> str:
        deadline, state = time.time() + timeout, None
        while time.time() < deadline:
            state = self.job_field(job, "JobState")
            if state in states:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job} is {state}, not {states} after {timeout} s\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job, stop the daemons by their pid files, remove the folder."""
        if _alive(self.base / "run" / "slurmctld.pid"):
            jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split()
            if jobs:
                self.run("scancel", "--full", *jobs, check=False, timeout=10)
                deadline = time.time() + 15
                while time.time() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                    time.sleep(0.3)
        pid_files = [*sorted((self.base / "run").glob("slurmd-*.pid")), self.base / "run" / "slurmctld.pid",
                     self.munge / "munged.pid"]
        pids = [p for p in (_alive(f) for f in pid_files) if p]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        for pid in pids:
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)
