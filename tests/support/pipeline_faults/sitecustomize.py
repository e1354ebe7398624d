"""Fault injection for the pipeline's rank-failure tests, loaded from outside the product via PYTHONPATH.

PIPELINE_FAULT="module:attribute[.method]" names a function; on the rank PIPELINE_FAULT_RANK (the launcher's
PMI_RANK) it is replaced by one that raises MemoryError naming itself. Every other rank runs the real code.
PIPELINE_FSIZE_LIMIT=N limits that rank's files to N bytes (RLIMIT_FSIZE, SIGXFSZ ignored so a write fails
with EFBIG instead of killing the process) from the start of the dedup stage's scan (MPI_Init, earlier, needs
its own files): a disk that refuses one rank's writes.
PIPELINE_SCAN_DELAY_S=S makes every scanned batch take S seconds longer (every rank): a kill lands mid-scan on
any machine.
PIPELINE_COUNT_WRITES=FILE counts the atomic writes (infra.files.atomic_write) of the command's own
process into FILE; PIPELINE_KILL_AT_WRITE=N SIGKILLs that process in its N-th one, after the bytes are in the
temporary file and before the rename: kill points spread over a run by what it has done, not by the clock.
"""

import importlib
import os
import resource
import signal

_target = os.environ.get("PIPELINE_FAULT", "")
_rank = os.environ.get("PIPELINE_FAULT_RANK", "1")
_mine = os.environ.get("PMI_RANK", "0") == _rank

if _mine and os.environ.get("PIPELINE_FSIZE_LIMIT"):
    from data_pipeline.stages import scan

    _limit = int(os.environ["PIPELINE_FSIZE_LIMIT"])
    _scan_tasks = scan.scan_tasks

    def _limited_scan_tasks(*args):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (_limit, _limit))
        return _scan_tasks(*args)

    scan.scan_tasks = _limited_scan_tasks

if _mine and _target:
    _module_name, _, _path = _target.partition(":")
    _owner = importlib.import_module(_module_name)
    *_parents, _name = _path.split(".")
    for _part in _parents:
        _owner = getattr(_owner, _part)

    def _injected(*args, **kwargs):
        raise MemoryError(f"injected fault in {_target}")

    setattr(_owner, _name, _injected)

if os.environ.get("PIPELINE_SCAN_DELAY_S"):
    import time

    from data_pipeline import steps

    _delay = float(os.environ["PIPELINE_SCAN_DELAY_S"])
    _scan_batch = steps.scan_batch

    def _slow_scan_batch(texts):
        time.sleep(_delay)
        return _scan_batch(texts)

    steps.scan_batch = _slow_scan_batch

if os.environ.get("PIPELINE_COUNT_WRITES") or os.environ.get("PIPELINE_KILL_AT_WRITE"):
    import contextlib

    from infra import files

    _main_pid = os.getpid()  # pool workers (forked later) neither count nor die: only the command's process
    _count_file = os.environ.get("PIPELINE_COUNT_WRITES")
    _kill_at = int(os.environ.get("PIPELINE_KILL_AT_WRITE", "0"))
    _writes = 0
    _atomic_write = files.atomic_write

    @contextlib.contextmanager
    def _counted_atomic_write(path, mode="w"):
        global _writes
        with _atomic_write(path, mode) as f:
            yield f
            if os.getpid() == _main_pid:
                _writes += 1
                if _count_file:
                    with open(_count_file, "w") as out:
                        out.write(str(_writes))
                if _writes == _kill_at:
                    f.flush()
                    os.kill(_main_pid, signal.SIGKILL)

    files.atomic_write = _counted_atomic_write
