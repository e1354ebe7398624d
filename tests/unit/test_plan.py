"""`pretrain plan` in-process (the console script's `main`, DeepSpeed imported once): batch arithmetic, exit codes,
ZeRO-3 memory, time to train, default world size, vocabulary from --data. The installed console script itself is
tests/integration/test_plan_command.py."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import subprocess

import pytest

from pretrain import cli
from pretrain.config import load_config
from pretrain.flops import count_params
from pretrain.metrics import PEAK_TFLOPS
from pretrain.presets import PRESETS

BATCH_LINE = re.compile(r"^batch\s+(\d+) x (\d+) x (\d+) x (\d+) = ([\d,]+) tokens per step", re.MULTILINE)
ZERO3_LINE = re.compile(r"^zero3 per GPU\s+([\d.]+) GiB", re.MULTILINE)
PARAMS_LINE = re.compile(r"^parameters\s+([\d,]+) total, ([\d,]+) non-embedding", re.MULTILINE)


@functools.cache
def plan(preset: str, world_size: int, *extra: str) -> subprocess.CompletedProcess:
    """`pretrain plan` run as the console script runs it, in this process: exit status, stdout, stderr."""
    argv = ["plan", "--preset", preset, "--world-size", str(world_size), *extra]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:  # argparse's refusals
            status = exit_.code
    return subprocess.CompletedProcess(["pretrain", *argv], status, stdout.getvalue(), stderr.getvalue())


DURATION = r"[\d.,]+ (?:days|hours|minutes|seconds)"
UNIT_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def seconds(duration: str) -> float:
    """'23.9 hours' -> seconds."""
    value, unit = duration.split()
    return float(value.replace(",", "")) * UNIT_SECONDS[unit]


def numbers(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize(("preset", "world_sizes"), [("gpt2-124m", (8, 32)), ("gpt3-1.3b", (8, 64))])
def test_batch_arithmetic_multiplies_out(preset, world_sizes):
    cfg = load_config(preset)
    for world in world_sizes:
        result = plan(preset, world)
        assert result.returncode == 0, result.stderr
        micro, seq, accum, dp, total = BATCH_LINE.search(result.stdout).groups()
        assert (int(micro), int(seq), int(dp)) == (cfg.train.micro_batch_size, cfg.model.seq_len, world)
        assert int(micro) * int(seq) * int(accum) * int(dp) == numbers(total) == cfg.train.global_batch_tokens


@pytest.mark.parametrize("preset", ["gpt2-124m", "gpt3-1.3b"])
def test_parameter_counts_are_the_models(preset):
    cfg = load_config(preset)
    total, non_embedding = PARAMS_LINE.search(plan(preset, 8).stdout).groups()
    assert numbers(total) == count_params(cfg.model)
    embeddings = cfg.model.padded_vocab_size * cfg.model.d_model + cfg.model.seq_len * cfg.model.d_model
    assert numbers(total) - numbers(non_embedding) == embeddings  # tied head, learned positions


@pytest.mark.parametrize(("preset", "world_sizes"), [("gpt2-124m", (8, 32)), ("gpt3-1.3b", (8, 64))])
def test_zero3_estimate_is_printed_and_falls_with_world_size(preset, world_sizes):
    small, large = (plan(preset, w) for w in world_sizes)
    per_gpu_small = float(ZERO3_LINE.search(small.stdout).group(1))
    per_gpu_large = float(ZERO3_LINE.search(large.stdout).group(1))
    assert per_gpu_large < per_gpu_small
    # DeepSpeed's own table is there too, for the world that was asked for.
    nodes = world_sizes[1] // 8
    assert f"HW: Setup with {nodes} nodes, 8 GPUs per node." in large.stdout
    assert "per CPU  |  per GPU" in large.stdout


@pytest.mark.parametrize(
    ("preset", "world_size", "expected"),
    [
        ("gpt2-124m", 128, "train.global_batch_tokens: 524288"),  # 16 x 1024 x 128 > 524288
        ("gpt3-1.3b", 24, "train.global_batch_tokens: 2097152"),  # 1024 sequences / (8 x 24) is not whole
        ("gpt3-1.3b", 12, "--world-size: 12 GPUs is not a whole number of 8-GPU nodes"),
    ],
)
def test_impossible_world_sizes_exit_2_with_one_line(preset, world_size, expected):
    result = plan(preset, world_size)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and expected in result.stderr


def test_unknown_override_key_exits_2_naming_it():
    result = plan("gpt2-124m", 8, "--set", "optim.learning_rate=1e-4")
    assert result.returncode == 2
    assert "optim.learning_rate" in result.stderr and "Traceback" not in result.stderr


def test_time_to_train_is_consistent_with_flops_and_peak():
    result = plan("gpt3-1.3b", 64, "--set", "log.peak_tflops=989", "--mfu", "0.5")
    assert result.returncode == 0, result.stderr
    flops = float(re.search(r"^flops per token\s+([\d.e+]+)", result.stdout, re.MULTILINE).group(1))
    run_flops = float(re.search(r"^flops per run\s+([\d.e+]+)", result.stdout, re.MULTILINE).group(1))
    duration, tokens_per_s = re.search(
        rf"^time to train\s+({DURATION}) on .*\(([\d,]+) tokens/s per GPU\)", result.stdout, re.MULTILINE
    ).groups()
    assert flops * numbers(tokens_per_s) == pytest.approx(0.5 * 989e12, rel=1e-3)
    assert seconds(duration) == pytest.approx(run_flops / (64 * 0.5 * 989e12), rel=0.05)
    # no peak given: one line per distinct peak of the table (H100 among them), each self-consistent
    table = re.findall(
        rf"^time to train\s+({DURATION}) on .* of ([\d.]+) TFLOP/s \((\S+)\)", plan("gpt3-1.3b", 64).stdout, re.M
    )
    assert len(table) == len(set(PEAK_TFLOPS.values()))
    assert any("H100" in gpus.split("/") and float(peak) == 989 for _, peak, gpus in table)
    for duration, peak, _ in table:
        assert seconds(duration) == pytest.approx(run_flops / (64 * 0.4 * float(peak) * 1e12), rel=0.05)
    one = plan("gpt3-1.3b", 64, "--peak-tflops", "312")
    assert one.stdout.count("time to train") == 1 and "of 312 TFLOP/s" in one.stdout


def plan_in_process(capsys, *argv: str) -> str:
    """`pretrain plan ARGV` in this process (DeepSpeed imported once for the whole sweep); its stdout."""
    assert cli.main(["plan", *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_plans_with_no_flags(preset, capsys):
    """Its own world size: one 8-GPU node, or for the debug presets the largest world below it that divides."""
    cfg = load_config(preset)
    out = plan_in_process(capsys, "--preset", preset)
    micro, seq, accum, dp, total = BATCH_LINE.search(out).groups()
    assert int(micro) * int(seq) * int(accum) * int(dp) == numbers(total) == cfg.train.global_batch_tokens
    assert int(dp) == (4 if preset.endswith("debug") else 8)
    assert out.count("time to train") == len(set(PEAK_TFLOPS.values()))


def test_plan_takes_the_vocabulary_from_the_dataset(tiny_dataset, capsys):
    out = plan_in_process(capsys, "--preset", "gpt2-124m", "--data", str(tiny_dataset))
    assert "vocab 256 (padded 256)" in out  # not the preset's 50257
    cfg = load_config("gpt2-124m", None, ["model.vocab_size=256"])
    assert numbers(PARAMS_LINE.search(out).group(1)) == count_params(cfg.model)
