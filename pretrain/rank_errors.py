"""Whatever rank fails, its error reaches the launching terminal and RUN/errors/, under every launcher.

Why: a rank's stderr reaches the terminal only if its launcher passes it on. `launch/train.sh` (the deepspeed
launcher with --enable_each_rank_log) writes it to per-rank files; the other ranks then die of the lost connection
and say only that; a user error that only rank 3 meets (a path missing on its node) used to exit 2 in silence.

What each rank does with an exception that ends it (pretrain/exit_policy.py decides the status and asks here):
- records it, once training has started (the process group exists, so rank 0 holds the run folder), in
  `RUN/errors/rank<r>.txt`: a header naming this launch (pretrain/rendezvous.py's job identity), host, pid and
  time, then the one-line message of a user error or the whole traceback of a bug;
- a user error: one line on stderr. Rank 0 prints at once; another rank first gives rank 0 `RANK_0_REPORTS_S`
  to record the same message (every rank usually meets the same config error) and prints only a different one.
  Before the process group there are no records, but a rank 0 that met the error too has exited by then and the
  launcher has stopped this rank; a rank 0 that did not waits at the rendezvous for this rank's line;
- a bug: the traceback, printed by the interpreter (the caller re-raises); under mpirun/mpiexec printed by the
  caller, which exits at once (os._exit): an interpreter exit would run mpi4py's MPI_Finalize, which waits for the
  other ranks, themselves waiting for this one in a collective, and the job would hang;
- the lost connection to a rank that stopped (gloo/NCCL's "Connection closed by peer"): a consequence, not a
  cause. Rank 0 waits up to `PEER_REPORTS_S` for that rank's record and prints it, so the cause is on rank 0's
  console even when the failed rank's own output went to a file; the other ranks print one line.
`launch/train.sh` prints this launch's records when the job fails, since its ranks' output goes to files.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from infra import files, launcher_env

ERRORS = "errors"
RANK_0_REPORTS_S = 10.0  # how long another rank waits for rank 0 to report a user error every rank may meet
PEER_REPORTS_S = 10.0  # how long rank 0 waits for the record of the rank whose loss stopped it
PREFIX = "pretrain.train"


def user_error(message: str, rank: int) -> str | None:
    """Record a user error; the line to print, or None when rank 0 recorded the same one (it printed it)."""
    run_dir, job = _this_launch()
    record(run_dir, rank, job, message)
    if rank != 0 and _rank_0_said(message, run_dir, job):
        return None
    return f"{PREFIX}: rank {rank}: error: {message}"


def peer_lost(rank: int) -> str:
    """The line of a rank stopped by a lost peer: on rank 0 the failed rank's recorded error."""
    return peer_lost_message(rank, *_this_launch())


def bug(rank: int) -> str | None:
    """Record the bug being handled; under mpirun/mpiexec its traceback to print (the caller exits at once),
    else None (the caller re-raises and the interpreter prints it)."""
    run_dir, job = _this_launch()
    record(run_dir, rank, job, traceback.format_exc())
    if "mpi4py.MPI" in sys.modules:  # an interpreter exit would wait in MPI_Finalize for ranks in a collective
        return traceback.format_exc().rstrip()
    return None


def _this_launch() -> tuple[Path | None, str]:
    """This rank's run folder (from its --output) and launch identity (pretrain/rendezvous.py)."""
    from pretrain.rendezvous import this_launch

    return run_folder_of(sys.argv[1:]), this_launch()


def _rank_0_said(message: str, run_dir: Path | None, job: str) -> bool:
    """Whether rank 0 recorded the same message within RANK_0_REPORTS_S (without a record: after waiting, no)."""
    deadline = time.monotonic() + RANK_0_REPORTS_S
    while time.monotonic() < deadline:
        said = recorded(run_dir, job).get(0)
        if said is not None:
            return said.strip() == message
        time.sleep(0.1)
    return False


def record(run_dir: Path | None, rank: int, job: str, text: str) -> Path | None:
    """RUN/errors/rank<r>.txt for an error during training (the folder is this launch's then); None before."""
    if run_dir is None or not _training_started():
        return None
    header = f"launch {job} rank {rank} host {launcher_env.node_name()} pid {os.getpid()} at {time.ctime()}\n"
    (run_dir / ERRORS).mkdir(parents=True, exist_ok=True)
    return files.write_text(run_dir / ERRORS / f"rank{rank}.txt", header + text.rstrip("\n") + "\n")


def recorded(run_dir: Path | None, job: str) -> dict[int, str]:
    """This launch's recorded errors by rank (records of earlier launches of the folder are left out)."""
    folder = run_dir / ERRORS if run_dir is not None else None
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for path in folder.glob("rank*.txt"):
        header, _, text = path.read_text(errors="replace").partition("\n")
        if header.startswith(f"launch {job} ") and path.stem[4:].isdigit():
            found[int(path.stem[4:])] = text
    return found


def peer_lost_message(rank: int, run_dir: Path | None, job: str) -> str:
    """Rank 0: the failed rank's recorded error (waiting for it); another rank: one line."""
    lost = f"{PREFIX}: rank {rank}: another rank stopped during a collective"
    if rank != 0:
        return f"{lost}; rank 0 reports its error"
    deadline = time.monotonic() + PEER_REPORTS_S
    while time.monotonic() < deadline:
        failed = {r: text for r, text in recorded(run_dir, job).items() if r != rank}
        if failed:
            first = min(failed)
            where = run_dir / ERRORS / f"rank{first}.txt"
            return f"{lost}: rank {first} failed ({where}):\n{failed[first].rstrip()}"
        time.sleep(0.2)
    return (
        f"{lost}, and none recorded an error in {run_dir / ERRORS if run_dir else 'RUN/errors'} within "
        f"{PEER_REPORTS_S:g} s: it was killed (a signal, the out-of-memory killer: see the launcher's report and "
        "`dmesg`) or its machine went down"
    )


def run_folder_of(argv: list[str]) -> Path | None:
    """The trainer's --output in its arguments (the last one wins, as in argparse); None if absent."""
    found = None
    for i, arg in enumerate(argv):
        if arg == "--output" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--output="):
            found = arg.split("=", 1)[1]
    return Path(found) if found else None


def _training_started() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()
