"""pretrain/watchdog.py's sampling of a thread's position keeps nothing of the sampled frames alive.

A frame held past its function's return keeps that function's locals alive; the old watchdog did that, which kept
DeepSpeed's transient [0]-shaped gradient accumulators alive and aborted ZeRO-3 runs (RELIABILITY.md, issue 23).
"""

from __future__ import annotations

import sys
import threading
import weakref

from pretrain.watchdog import main_thread_position


class Payload:
    """Stands for the AccumulateGrad nodes in DeepSpeed's count_used_parameters_in_backward."""


def run_sampled(sample) -> weakref.ref:
    """Run a function in a thread, sample that thread while it holds a local, let it return; a weakref to it."""
    holding, finish, ref = threading.Event(), threading.Event(), {}

    def work() -> None:
        payload = Payload()
        ref["payload"] = weakref.ref(payload)
        holding.set()
        finish.wait()

    thread = threading.Thread(target=work)
    thread.start()
    holding.wait()
    kept = sample(thread.ident)
    finish.set()
    thread.join()
    ref["kept"] = kept
    return ref["payload"]


def test_a_sample_keeps_no_local_of_the_sampled_function_alive() -> None:
    assert run_sampled(main_thread_position)() is None


def test_holding_the_sampled_frame_would_keep_it_alive() -> None:
    """The check above can fail: the old watchdog's way (keep the frame until the next sample) keeps it."""
    assert run_sampled(lambda ident: sys._current_frames()[ident])() is not None


def test_the_position_is_stable_while_blocked_and_tells_depths_apart() -> None:
    blocked, release = threading.Event(), threading.Event()

    def inner() -> None:
        blocked.set()
        release.wait()

    def outer() -> None:
        inner()

    thread = threading.Thread(target=outer)
    thread.start()
    blocked.wait()
    first, second = main_thread_position(thread.ident), main_thread_position(thread.ident)
    release.set()
    thread.join()
    assert first == second and len(first) == 3
    here = main_thread_position(threading.get_ident())
    assert here[2] >= 1 and main_thread_position(-1) is None
