"""The run folder: one job at a time, and no launch that could damage the checkpoints already in it.

Why: a relaunch with other tokenizer settings once rewrote RUN/config.yaml and then died inside DeepSpeed with a
tensor-size error; from then on export/evaluate/generate of the run's good checkpoints failed.

Before anything is written, rank 0 (before the process group exists, so a refusal takes seconds):

1. takes the folder's lock, `RUN/LOCK` (pretrain/run_lock.py): a live job's lock refuses the launch, naming it;
   a dead job's lock is taken over with a warning.
2. checks the launch against what the folder holds: the checkpoint it would resume (its client_state.json:
   the config and tokenizer it was trained with) and RUN/config.yaml when the folder has checkpoints. The
   tokenizer sha256, every model.* key (vocabulary, seq_len, shape) and data.seed must be equal; otherwise the
   launch is refused with every difference named and the folder is left exactly as it was (the lock it took is
   removed again). `--resume none` into a folder with checkpoints is refused too (it would overwrite them).
   So is an `--init-from-hf` folder other than the one the checkpoints started from (they continue from
   themselves; its weights would be ignored).
3. records the launch: RUN/config.yaml is written only when the folder has no checkpoint yet, so it always
   describes the checkpoints in it; every launch writes RUN/launches/NNN.yaml (time, host, command, the checkpoint
   it resumes, its full config, and what it changes relative to RUN/config.yaml, e.g. train.max_steps 6 -> 8).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from infra import launcher_env
from infra.files import write_text
from pretrain import checkpoint
from pretrain.checkpoint import CheckpointRef
from pretrain.errors import PretrainError
from pretrain.run_lock import RunLock, acquire_lock

LAUNCHES = "launches"
CONFIG = "config.yaml"
MUST_MATCH_SECTIONS = ("model",)  # every key: the weights' shapes and the function they compute
MUST_MATCH_KEYS = ("data.seed",)  # the sample order consumed_samples counts into


class RunFolderError(PretrainError):
    """This launch does not fit the run folder's checkpoints; the message names every difference and the fix."""


# --------------------------------------------------------------------------- the compatibility check


def flatten(config: dict) -> dict[str, object]:
    """{'model': {'seq_len': 32}} -> {'model.seq_len': 32} (lists kept as values)."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def _must_match(key: str) -> bool:
    return key.split(".", 1)[0] in MUST_MATCH_SECTIONS or key in MUST_MATCH_KEYS


def incompatible(reference: dict, tokenizer: dict | None, config: dict, manifest: dict) -> list[str]:
    """'key: checkpoint value -> this launch's value' for every setting a resume cannot change."""
    before, after = flatten(reference), flatten(config)
    diffs = [
        f"{key}: {before[key]!r} -> {after.get(key)!r}"
        for key in sorted(before)
        if _must_match(key) and before[key] != after.get(key)
    ]
    old_sha = (tokenizer or {}).get("sha256")
    new_sha = manifest.get("tokenizer", {}).get("sha256")
    if old_sha and new_sha and old_sha != new_sha:
        diffs.insert(
            0, f"tokenizer sha256: {old_sha[:12]}… -> {new_sha[:12]}… (the dataset was made with another tokenizer)"
        )
    return diffs


def changes(reference: dict, config: dict) -> dict[str, list]:
    """Every key whose value differs from RUN/config.yaml: {key: [old, new]} (what a launch record lists)."""
    before, after = flatten(reference), flatten(config)
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def find_checkpoint(run_dir: Path, resume: str) -> CheckpointRef | None:
    """The checkpoint this launch resumes: none, the newest complete one of the folder (auto), or a given path."""
    if resume == "none":
        return None
    if resume == "auto":
        return checkpoint.find_resumable(run_dir)
    return checkpoint.resolve_checkpoint(resume)


def _client_state(found: CheckpointRef) -> dict | None:
    path = found.path / checkpoint.CLIENT_STATE
    return json.loads(path.read_text()) if path.is_file() else None


def check_launch(
    run_dir: Path, config: dict, manifest: dict, resume: str, init_from_hf: dict | None = None
) -> CheckpointRef | None:
    """Refuse (RunFolderError) a launch that would damage or misuse the folder's checkpoints; return the one to
    resume. Reads only."""
    saved = checkpoint.complete_tags(run_dir / checkpoint.CHECKPOINTS)
    if resume == "none" and saved:
        raise RunFolderError(
            f"{run_dir}: holds checkpoints up to {saved[-1]}; --resume none would train from step 0 over them. "
            "Nothing was changed. Resume them (--resume auto), or start the new run in another --output folder"
        )
    found = find_checkpoint(run_dir, resume)
    problems: list[str] = []
    client = _client_state(found) if found else None
    if client and "config" in client:
        where = f"the checkpoint it resumes, {found.path}"
        problems += [
            f"{d} (vs {where})" for d in incompatible(client["config"], client.get("tokenizer"), config, manifest)
        ]
        problems += [f"{d} (vs {where})" for d in other_start(client.get("init_from_hf"), init_from_hf)]
    if saved and (run_dir / CONFIG).is_file():
        folder_config = yaml.safe_load((run_dir / CONFIG).read_text())
        problems += [f"{d} (vs {run_dir / CONFIG})" for d in incompatible(folder_config, None, config, manifest)]
    if problems:
        raise RunFolderError(
            f"{run_dir}: this launch does not fit the run's checkpoints: "
            + "; ".join(dict.fromkeys(problems))
            + f". Nothing in {run_dir} was changed. To continue the run, launch it with its own settings "
            f"({run_dir / CONFIG}) on data made with its tokenizer; to train with the new settings, use another "
            "--output folder"
        )
    return found


def other_start(recorded: dict | None, launch: dict | None) -> list[str]:
    """A resumed run continues its own checkpoint: an --init-from-hf other than the one it started from is refused
    (its weights would be silently ignored). Without the flag the model.* check decides."""
    if launch is None or (
        recorded and (recorded["path"], recorded["config_sha256"]) == (launch["path"], launch["config_sha256"])
    ):
        return []
    started = f"--init-from-hf {recorded['path']}" if recorded else "no --init-from-hf"
    return [f"--init-from-hf {launch['path']}: the checkpoints started from {started} and continue from themselves"]


# --------------------------------------------------------------------------- the launch record


def record_launch(
    run_dir: Path, config: dict, resumed: CheckpointRef | None, init_from_hf: dict | None = None
) -> tuple[Path, dict]:
    """Write RUN/config.yaml if the folder has no checkpoint yet, and RUN/launches/NNN.yaml; return that record's
    path and its changes relative to RUN/config.yaml."""
    config_path = run_dir / CONFIG
    has_checkpoints = bool(checkpoint.complete_tags(run_dir / checkpoint.CHECKPOINTS))
    if not has_checkpoints or not config_path.is_file():
        write_text(config_path, yaml.safe_dump(config, sort_keys=False))
    changed = changes(yaml.safe_load(config_path.read_text()), config)
    launches = run_dir / LAUNCHES
    launches.mkdir(exist_ok=True)
    number = 1 + max((int(p.stem) for p in launches.glob("*.yaml") if p.stem.isdigit()), default=0)
    record = {
        "launch": number,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": launcher_env.node_name(),
        "command": sys.argv,
        "world_size": launcher_env.world_size(),
        "resumes": str(resumed.path) if resumed else None,
        "init_from_hf": None if resumed else init_from_hf,  # where a run that starts here takes its weights
        "changes_from_config_yaml": changed,
        "config": config,
    }
    path = launches / f"{number:03d}.yaml"
    write_text(path, yaml.safe_dump(record, sort_keys=False))
    return path, changed


# --------------------------------------------------------------------------- all of it, for the trainer


@dataclass
class Claim:
    """What rank 0 holds after a successful claim: the lock and the checkpoint to resume."""

    lock: RunLock
    resume_from: CheckpointRef | None
    record: Path
    changed: dict


def claim(
    run_dir: Path, config: dict, manifest: dict, resume: str, stale_s: float, init_from_hf: dict | None = None
) -> Claim:
    """Lock, check, record (rank 0, before anything else is written); on a failed check the folder is unchanged
    (a folder this launch created is removed again)."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(run_dir, stale_s)
    try:
        found = check_launch(run_dir, config, manifest, resume, init_from_hf)
        record, changed = record_launch(run_dir, config, found, init_from_hf)
    except BaseException:
        lock.release()
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    lock.heartbeat()
    return Claim(lock, found, record, changed)
