"""A real one-node SLURM cluster on localhost, for testing the sbatch scripts end to end.

Starts Debian's `munged`, `slurmctld` and `slurmd` as root from a generated slurm.conf whose state, spool,
logs, munge socket and key all live in one temporary directory, on free ports, so it never touches a system
SLURM. Only plugins that work without cgroups (proctrack/linuxproc, task/none) are used, so it runs inside
containers. Client commands find the cluster through `SLURM_CONF`, which `env()` returns.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support.launch import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")


def missing_tools() -> list[str]:
    """SLURM/munge programs absent from PATH and /usr/sbin (the test skips, naming them)."""
    search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [tool for tool in DAEMONS + CLIENTS if shutil.which(tool, path=search) is None]


def _sbin(tool: str) -> str:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or tool


class SlurmCluster:
    """One node named after `hostname -s` with `cpus` CPUs; use as a context manager (daemons die on exit)."""

    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 4096) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self._procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """The caller's environment plus SLURM_CONF pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Write the configs, start the three daemons, and wait until the node is idle."""
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self._start_munge()
        self.conf.write_text(self._slurm_conf())
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self.wait_idle(timeout_s)

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        os.chmod(self.root / "munge", 0o700)
        self._spawn(
            "munged",
            [
                _sbin("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        self._wait_for(lambda: self.munge_socket.exists(), 20.0, "munged socket")

    def _slurm_conf(self) -> str:
        r, log = self.root, self.root / "log"
        return "\n".join(
            [
                "ClusterName=launchtest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.munge_socket},cred_expire=10",  # a requeued job waits this long, not 120 s
                f"StateSaveLocation={r / 'state'}",
                f"SlurmdSpoolDir={r / 'spool'}",
                f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                f"SlurmdPidFile={r / 'slurmd.pid'}",
                f"SlurmctldLogFile={log / 'slurmctld.log'}",
                f"SlurmdLogFile={log / 'slurmd.log'}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/backfill",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "ReturnToService=2",
                "KillWait=10",
                "MinJobAge=600",
                "SchedulerParameters=sched_interval=2",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
                f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 (lives as long as the daemon)
        self._procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env())

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s:\n{self.logs()}")

    def node_state(self) -> str:
        """`sinfo`'s state for the node ('idle', 'alloc', 'down*', ...), '' when slurmctld does not answer."""
        run = subprocess.run(
            ["sinfo", "-h", "-n", self.node, "-o", "%T"], env=self.env(), capture_output=True, text=True, timeout=20
        )
        return run.stdout.strip() if run.returncode == 0 else ""

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        self._wait_for(lambda: self.node_state() == "idle", timeout_s, f"node {self.node} idle in sinfo")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A client command (sbatch, scontrol, ...) against this cluster."""
        done = subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def job_state(self, job_id: str) -> str:
        """PENDING/RUNNING/COMPLETED/FAILED/... from `scontrol show job` (kept for MinJobAge seconds)."""
        shown = self.run("scontrol", "show", "job", job_id, "-o", check=False).stdout
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        return fields.get("JobState", "")

    def job_field(self, job_id: str, name: str) -> str:
        shown = self.run("scontrol", "show", "job", job_id, "-o", check=False).stdout
        return dict(f.split("=", 1) for f in shown.split() if "=" in f).get(name, "")

    def wait_job(self, job_id: str, timeout_s: float, until: tuple[str, ...] = ("COMPLETED",)) -> str:
        """Poll until the job reaches a state in `until` or any terminal state; returns that state."""
        terminal = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in until or state in terminal:
                return state
            time.sleep(1.0)
        raise TimeoutError(f"job {job_id} still {state or 'unknown'} after {timeout_s:.0f}s:\n{self.logs()}")

    def logs(self) -> str:
        """Tails of the daemons' logs, for failure messages."""
        tails = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-15:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def stop(self) -> None:
        """Cancel leftover jobs, then SIGTERM each daemon we started (SIGKILL after 10 s)."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.env(), capture_output=True, timeout=20)
        for name in reversed(DAEMONS):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
