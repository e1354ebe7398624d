"""What the trainer says: the log line, the throughput it reports, the end-of-run summary, perplexity, how an error
is reported, and the documented launch command.

The loop tests drive `Trainer.run` with its steps, evaluation and saves replaced by stand-ins that advance a fake
clock, so the numbers are exact and no test depends on the speed of the machine. The 2-rank runs that show the
same on the real engine are in test_train.py (`assert_console`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pretrain import metrics, signals, train
from pretrain.config import load_config
from pretrain.signals import LauncherWatch, PreemptionFlag


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StubTrainer(train.Trainer):
    """Trainer.run with steps of 2 s, evaluations of 50 s and saves of 100 s on a fake clock."""

    STEP_S, EVAL_S, SAVE_S = 2.0, 50.0, 100.0

    def __init__(self, clock: FakeClock, results: dict[int, dict] | None = None, **sets: object) -> None:
        overrides = ["model.vocab_size=256", *(f"{k}={v}" for k, v in sets.items())]
        self.cfg = load_config("debug", None, overrides)
        self.clock_source, self.results = clock, results or {}
        self.rank, self.world_size, self.step, self.bad_in_a_row = 0, 2, 0, 0
        self.started = clock()
        self.clock, self.last_checkpoint = metrics.TrainClock(), None
        self.flops_per_token, self.peak = 1e9, 100.0
        self.rows: list[tuple[int, dict]] = []
        self.writer = type("W", (), {"write": lambda _, step, values: self.rows.append((step, values))})()
        self.sampler = type("S", (), {"consumed_samples": 0})()
        self.engine = type("E", (), {"skipped_steps": 0})()
        self.spikes = type("D", (), {"count": 0})()

    def train_step(self) -> dict:
        self.clock_source.now += self.STEP_S
        self.step += 1
        default = {"loss": 5.0 - 0.1 * self.step, "grad_norm": 0.5, "lr": 1e-3, "skipped": False}
        return {"spike_skipped": False, **default, **self.results.get(self.step, {})}

    def evaluate(self) -> float:
        self.clock_source.now += self.EVAL_S
        return 4.0

    def save(self) -> None:
        self.clock_source.now += self.SAVE_S
        self.last_checkpoint = Path(f"RUN/checkpoints/step{self.step:08d}")


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(metrics.time, "perf_counter", clock)
    monkeypatch.setattr(train.time, "perf_counter", clock)
    monkeypatch.setattr(train, "any_rank_requested", lambda flag: flag.reason)
    monkeypatch.setattr(metrics, "memory_gib", lambda: 1.5)
    return clock


def run_stub(trainer: StubTrainer) -> int:
    return trainer.run(PreemptionFlag(), LauncherWatch([]))


def test_tokens_per_s_counts_training_steps_only(fake_clock: FakeClock, capsys: pytest.CaptureFixture) -> None:
    """Evaluation and checkpoint time (here 50 s and 100 s after step 2) never lowers a window's tokens/s."""
    trainer = StubTrainer(fake_clock, **{"train.max_steps": 4, "train.eval_interval": 2, "train.save_interval": 2})
    assert run_stub(trainer) == 0
    per_step = trainer.cfg.train.global_batch_tokens / StubTrainer.STEP_S  # 1,024 tokens in 2 s
    logged = [values for _, values in trainer.rows if "tokens_per_s" in values]
    assert [v["tokens_per_s"] for v in logged] == [per_step] * 4
    assert logged[0]["tflops_per_gpu"] == pytest.approx(per_step * 1e9 / 2 / 1e12)
    assert logged[0]["mfu"] == pytest.approx(logged[0]["tflops_per_gpu"] / 100.0)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ") and "| loss" in line]
    assert lines[1] == (
        "step 2/4 | loss 4.8000 | lr 1.000e-03 | grad norm 0.500 | 512 tokens/s | 0.256 TFLOP/s per GPU | "
        "MFU 0.3% | mem 1.50 GiB"
    )
    assert len(lines) == 4 and "\r" not in out


def test_end_of_run_summary(fake_clock: FakeClock, capsys: pytest.CaptureFixture) -> None:
    trainer = StubTrainer(fake_clock, **{"train.max_steps": 3, "train.eval_interval": 100, "train.save_interval": 100})
    run_stub(trainer)
    out = capsys.readouterr().out
    # eval at step 0 (50) + 3 steps (6) + final save (100) + final eval (50)
    assert "summary: wall time 206.0 s, steps 0 -> 3, 3,072 tokens" in out
    assert "summary: 512 tokens/s, 0.256 TFLOP/s per GPU, MFU 0.3% (mean over training steps;" in out
    assert "summary: last checkpoint RUN/checkpoints/step00000003" in out
    assert "summary: validation loss 4.0000, perplexity 54.60" in out
    assert out.splitlines()[-2:] == ["loss: 4.0000", f"perplexity: {math.exp(4.0):.4f}"]


def test_a_spike_skip_is_not_a_non_finite_step(fake_clock: FakeClock, capsys: pytest.CaptureFixture) -> None:
    """The spike guard's deliberate skip (its loss made NaN for ZeRO-3) neither says nor counts 'non-finite'."""
    nan = float("nan")
    results = {2: {"loss": nan, "skipped": True, "spike_skipped": True}, 3: {"loss": nan, "skipped": True}}
    trainer = StubTrainer(fake_clock, results, **{"train.max_steps": 4, "train.max_bad_steps": 2})
    assert run_stub(trainer) == 0
    out = capsys.readouterr().out
    assert "step 2: non-finite" not in out and out.count("non-finite loss/grad norm") == 1  # step 3 only
    assert trainer.bad_in_a_row == 0


def test_preemption_saves_and_summarises(fake_clock: FakeClock, capsys: pytest.CaptureFixture) -> None:
    trainer = StubTrainer(fake_clock, **{"train.max_steps": 10})
    flag = PreemptionFlag()
    flag.request(signals.PREEMPTION)
    assert trainer.run(flag, LauncherWatch([])) == 0
    out = capsys.readouterr().out
    assert "preemption signal: saving at step 1 and exiting" in out and trainer.last_checkpoint.name == "step00000001"
    assert "summary: last checkpoint RUN/checkpoints/step00000001" in out and "loss: " not in out


def test_a_dead_launcher_stops_the_loop(fake_clock: FakeClock, capsys: pytest.CaptureFixture) -> None:
    class Gone:
        pid = 4242

        def is_running(self) -> bool:
            return False

    trainer = StubTrainer(fake_clock, **{"train.max_steps": 10})
    assert trainer.run(PreemptionFlag(), LauncherWatch([Gone()])) == 0
    assert "the launcher process (pid 4242) exited: saving at step 1 and exiting" in capsys.readouterr().out


def test_one_perplexity_inf_for_a_diverged_run() -> None:
    import pretrain.evaluate
    import pretrain.model

    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(math.log(300)) == pytest.approx(300)
    assert metrics.perplexity(1e6) == math.inf and metrics.perplexity(math.inf) == math.inf
    assert math.isnan(metrics.perplexity(math.nan))
    assert not hasattr(pretrain.model, "perplexity")  # one function, one meaning
    assert "from pretrain.metrics import perplexity" in Path(pretrain.evaluate.__file__).read_text()
