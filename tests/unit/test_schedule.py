"""The learning-rate schedule (pretrain/schedule.py): cosine as DeepSpeed's WarmupCosineLR gave it, WSD's phases
and shapes, the rate of the first update after a relaunch with a larger train.max_steps, and the refusal of a
DeepSpeed JSON that names its own scheduler. In-process, no launches."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain import schedule
from pretrain.config import OptimConfig, load_config
from pretrain.engine import ds_config_for_run
from pretrain.errors import ConfigError


def optim(**sets: object) -> OptimConfig:
    return OptimConfig(**{"lr": 1e-3, "warmup_steps": 3, "min_lr_ratio": 0.1, **sets})


def test_cosine_is_deepspeeds_warmup_cosine_lr() -> None:
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = WarmupCosineLR(opt, total_num_steps=12, warmup_num_steps=3, cos_min_ratio=0.1, warmup_type="linear")
    for iteration in range(15):
        reference.step(iteration)
        assert 1e-3 * schedule.lr_ratio(iteration, optim(), 12) == reference.get_lr()[0], iteration


def test_the_relaunch_bug_numbers() -> None:
    """A run made with max_steps=6 and resumed with 12: step 7 (iteration 6) at the 12-step schedule's 6.3e-4."""
    assert 1e-3 * schedule.lr_ratio(6, optim(), 6) == pytest.approx(1e-4)
    assert 1e-3 * schedule.lr_ratio(6, optim(), 12) == pytest.approx(6.28e-4, rel=1e-3)


@pytest.mark.parametrize(
    ("shape", "halfway"), [("linear", 0.55), ("cosine", 0.55), ("1-sqrt", 1 - 0.9 * math.sqrt(0.5))]
)
def test_wsd_warms_up_holds_the_peak_then_decays(shape: str, halfway: float) -> None:
    cfg = optim(schedule="wsd", decay_fraction=0.2, decay_shape=shape, warmup_steps=10)
    ratios = [schedule.lr_ratio(i, cfg, 100) for i in range(100)]
    assert ratios[:10] == [i / 10 for i in range(10)]
    assert ratios[10:80] == [1.0] * 70  # stable until the last 20 updates
    assert ratios[89] == pytest.approx(halfway)  # (89 - 80 + 1) / 20 = half of the decay
    assert ratios[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(ratios[80:], ratios[81:], strict=False))


def test_extending_a_wsd_run_in_its_stable_phase_changes_nothing_before_the_new_decay() -> None:
    cfg = optim(schedule="wsd", decay_fraction=0.1)
    short = [schedule.lr_ratio(i, cfg, 1000) for i in range(850)]
    assert short == [schedule.lr_ratio(i, cfg, 2000) for i in range(850)]


def test_a_resumed_schedule_sets_this_launchs_rate_at_once() -> None:
    """The saved optimizer groups hold the old schedule's next rate; resume() replaces it before the first step."""
    param = torch.nn.Parameter(torch.zeros(1))
    old = torch.optim.AdamW([param], lr=1e-3)
    saved = schedule.LRSchedule(old, optim(), max_steps=6)
    for _ in range(6):
        saved.step()
    assert old.param_groups[0]["lr"] == pytest.approx(1e-4)
    new = torch.optim.AdamW([param], lr=1e-3)
    extended = schedule.LRSchedule(new, optim(), max_steps=12)
    extended.load_state_dict(saved.state_dict())
    new.load_state_dict(old.state_dict())  # DeepSpeed loads the optimizer state after the schedule's
    assert new.param_groups[0]["lr"] == pytest.approx(1e-4)
    extended.resume()
    assert new.param_groups[0]["lr"] == pytest.approx(6.28e-4, rel=1e-3)


def test_a_deepspeed_json_with_its_own_scheduler_is_refused(tmp_path) -> None:
    import json

    from pretrain.engine import load_ds_json

    template = load_ds_json("ds_configs/zero3_cpu.json")
    template["scheduler"] = {"type": "WarmupDecayLR", "params": {"total_num_steps": 100}}
    path = tmp_path / "own_scheduler.json"
    path.write_text(json.dumps(template))
    cfg = load_config("debug", None, ["model.vocab_size=256", f"train.ds_config={path}"])
    with pytest.raises(ConfigError, match=r"names its own scheduler \(WarmupDecayLR\).*remove the \"scheduler\" block"):
        ds_config_for_run(cfg, 4, tmp_path)


def test_schedule_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="optim.decay_fraction: must be in"):
        load_config("debug", None, ["optim.schedule=wsd", "optim.decay_fraction=0"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config("debug", None, ["optim.schedule=linear"])
