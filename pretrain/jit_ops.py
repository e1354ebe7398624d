"""DeepSpeed's JIT-compiled ops, loaded before the rendezvous, so that a build killed midway cannot hang later launches.

torch builds a JIT op under a lock file, `<extensions dir>/<op>/lock`, which it creates with O_EXCL, keeps open
during the build and removes when the build ends. A process killed during the build (a job preempted or
cancelled in the first minute of its first run, a Ctrl-C, a test's timeout) leaves the file behind, and every
later process on that machine that loads the op waits for it forever, printing nothing: torch's wait has no
deadline. On CPU every launch loads one such op (the shared-memory collective, built in `init_distributed`), so
one killed first launch silently hung every later one, the test suite's included.

So `load_ops`, called by each rank before DeepSpeed's own loading, loads the ops itself:
- under an flock on `<op dir>/pretrain.flock`; the kernel drops an flock when its holder dies, so this lock is
  never stale. One process per machine builds; the others wait for it, then load the built module.
- holding it, a torch `lock` that no live process holds open is left by a dead build: it is removed, with a
  warning naming it. A lock still held open belongs to a live build by another program: wait for it, up to
  LIVE_BUILD_WAIT_S, then stop with a message naming the file. Where /proc cannot tell (another user's process),
  a lock older than LIVE_BUILD_WAIT_S counts as dead.
DeepSpeed then finds each module in its cache of loaded ops (`OpBuilder._loaded_ops`) and builds nothing.

The build runs the environment's own ninja when it has one (pip's, beside the interpreter), whatever PATH says:
ninja 1.11 and 1.13 hash the build log differently, so a machine with both rebuilt the op (1-3 minutes) each time
a launch found the other one first on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pretrain.errors import PretrainError

# a JIT build takes ~30-90 s for the CPU shm op on 2 cores and a few minutes for a CUDA op; far longer is a hang
LIVE_BUILD_WAIT_S = 900.0
POLL_S = 0.5


class StaleBuildLock(PretrainError):
    """A JIT build lock that a live process holds for longer than any build takes."""


def build_dir(name: str) -> Path:
    """Where torch builds op `name`: TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions/pyXY_<cpu|cuXY>."""
    from torch.utils.cpp_extension import _get_build_directory  # private, but the one place torch decides this

    return Path(_get_build_directory(name, verbose=False))


def lock_holders(lock: Path) -> list[int] | None:
    """Pids with `lock` open (torch's builder keeps it open while it builds); None where /proc cannot tell."""
    if not Path("/proc/self/fd").is_dir():
        return None
    holders, unreadable, target = [], False, os.path.realpath(lock)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fds = list((proc / "fd").iterdir())
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            unreadable |= proc.exists()  # a process that ended meanwhile is not a holder
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    holders.append(int(proc.name))
                    break
    return holders if holders or not unreadable else None


def is_dead(lock: Path, now: float | None = None) -> bool:
    """True when `lock` was left by a build that no longer runs."""
    holders = lock_holders(lock)
    if holders is not None:
        return not holders
    return (now or time.time()) - lock.stat().st_mtime > LIVE_BUILD_WAIT_S


def clear_dead_lock(directory: Path, wait_s: float = LIVE_BUILD_WAIT_S) -> None:
    """Return once `directory/lock` is gone: removed if its build is dead, else waited for up to `wait_s`."""
    lock = directory / "lock"
    deadline = time.monotonic() + wait_s
    while lock.exists():
        try:
            if is_dead(lock):
                lock.unlink(missing_ok=True)
                print(f"WARNING: removed {lock}: a JIT build that was killed left it behind", file=sys.stderr)
                return
        except FileNotFoundError:
            return  # the build ended between the checks
        if time.monotonic() > deadline:
            raise StaleBuildLock(
                f"{lock} has been held by a running process for over {wait_s:.0f} s, longer than any build of "
                f"this op takes; stop that process (or delete the file if no build is running) and relaunch"
            )
        time.sleep(POLL_S)


@contextlib.contextmanager
def build_slot(directory: Path) -> Iterator[None]:
    """One process per machine in `directory` at a time; released by the kernel if the holder dies."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "pretrain.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prefer_environment_ninja() -> None:
    """Put the interpreter's bin folder first on PATH when it holds a ninja (torch builds with `ninja` from PATH)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if Path(bin_dir, "ninja").is_file() and path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path


def load_ops(builder_names: tuple[str, ...]) -> None:
    """Load each DeepSpeed op of the current accelerator that it can JIT-build here, safely (see the module doc)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    prefer_environment_ninja()
    for name in builder_names:
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            continue  # DeepSpeed will not load it here either
        directory = build_dir(builder.name)
        with build_slot(directory):
            clear_dead_lock(directory)
            builder.load()


def load_comm_ops() -> None:
    """The op `deepspeed.init_distributed` loads on every rank: the CPU accelerator's shared-memory collective."""
    load_ops(("ShareMemCommBuilder",))
