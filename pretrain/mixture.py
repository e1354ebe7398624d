"""Training on a weighted mixture of datasets: the sources, their interleaved order, and their identity.

`--data web=0.6 --data code=0.25 --data books=0.15` (or YAML `data.mix: [{path, weight, name}]`) names datasets
written by `pipeline run` with one tokenizer. Weights are normalised.

The order. Global sample positions are cut into blocks of `BLOCK` positions; every block gives each source the
same number of slots, `n_s` (its weight times `BLOCK`, rounded by largest remainder), interleaved evenly: the j-th
slot of source s sits at time (j + 1/2) / n_s of the block, and the block lists the slots in time order. Position
g is then slot `g % BLOCK` of block `g // BLOCK`, and the j-th slot of source s in block b is that source's own
position `b·n_s + j`, which its Feistel order (`pretrain.data.SampleOrder`, seeded per source) maps to a sample.
So a position costs O(1) and no state, the order is a function of (seed, sample counts, weights) alone and does
not depend on the world size, and a resume needs only `consumed_samples`, as for one dataset. A one-source
mixture is exactly the single-dataset order.

Share: in any window of n consecutive positions a source's count differs from n × weight by at most 2 samples
(even slots; measured in tests/test_mixture.py) plus n / (2·BLOCK) for rounding the weight, so its realised share
is within 2/n + 0.005% of its weight: within 1% over any window of 200 or more samples.

Identity: each source's manifest sha256, training-sample count and weight go into every checkpoint; a relaunch
whose sources differ is refused naming what changed (pretrain/run_folder.py) unless `--allow-data-change`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.files import file_sha256
from pretrain.errors import ConfigError

BLOCK = 10_000  # slots per interleaving block: weights are realised to 1/BLOCK
REPEAT_WARNING_EPOCHS = 4.0  # a source drawn more often than this many times is warned about
MIX_KEYS = ("path", "weight", "name")


@dataclass(frozen=True)
class Source:
    """One dataset of the mixture; `weight` is normalised (the weights of a mixture sum to 1)."""

    name: str
    path: str
    weight: float


def data_overrides(flags: Sequence[str]) -> list[str]:
    """`--data` flags as config overrides: one plain PATH is `data.path` (as ever), anything else `data.mix`."""
    if len(flags) == 1 and "=" not in flags[0]:
        return [f"data.path={flags[0]}"]
    mix = []
    for flag in flags:
        path, _, weight = flag.rpartition("=") if "=" in flag else (flag, "", "1")
        try:
            mix.append({"path": path, "weight": float(weight)})
        except ValueError:
            raise ConfigError(
                f"--data {flag}: the weight {weight!r} is not a number; use PATH or PATH=WEIGHT"
            ) from None
    return [f"data.mix={json.dumps(mix)}"]


def check_mix_entries(mix: list) -> list[dict]:
    """`data.mix` entries completed to {path, weight, name}; ConfigError naming the entry for anything wrong."""
    entries = []
    for i, entry in enumerate(mix):
        where = f"data.mix[{i}]"
        if not isinstance(entry, dict) or not entry.get("path"):
            raise ConfigError(f"{where}: needs a path, e.g. {{path: data/web, weight: 0.7, name: web}}; got {entry!r}")
        unknown = sorted(set(entry) - set(MIX_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; an entry has {', '.join(MIX_KEYS)}")
        weight = entry.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
            raise ConfigError(f"{where}.weight: must be a positive number, got {weight!r}")
        name = str(entry.get("name") or Path(str(entry["path"])).name)
        entries.append({"path": str(entry["path"]), "weight": float(weight), "name": name})
    names = [e["name"] for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"data.mix: the name(s) {twice} are used twice (metrics columns are per name); set `name`")
    return entries


def sources(data: object) -> list[Source]:
    """The run's sources from its DataConfig: `data.mix`, or `data.path` as a one-source mixture."""
    entries = data.mix or [{"path": data.path, "weight": 1.0, "name": Path(str(data.path)).name}]
    total = sum(e["weight"] for e in entries)
    return [Source(e["name"], e["path"], e["weight"] / total) for e in entries]


def check_one_tokenizer(mixture: Sequence[Source], manifests: Sequence[dict]) -> None:
    """Every source must be tokenized alike: same tokenizer sha256, vocabulary and EOS as the first."""
    first, reference = mixture[0], manifests[0]
    for source, manifest in zip(mixture[1:], manifests[1:], strict=True):
        for what, get in (
            ("tokenizer sha256", lambda m: m.get("tokenizer", {}).get("sha256")),
            ("vocab_size", lambda m: m.get("vocab_size")),
            ("eos_id", lambda m: m.get("eos_id")),
        ):
            if get(manifest) != get(reference):
                raise ConfigError(
                    f"data.mix: {source.path} ({source.name}) and {first.path} ({first.name}) were tokenized "
                    f"differently ({what} {get(manifest)} vs {get(reference)}); a mixture needs one tokenizer: "
                    "tokenize every source with the same tokenizer"
                )


def train_samples(manifest: dict, seq_len: int) -> int:
    """Training samples of a dataset from its manifest alone (as `TokenStream.num_samples`, no shard opened)."""
    return max(0, (int(manifest["splits"]["train"]["num_tokens"]) - 1) // seq_len)


def identity(mixture: Sequence[Source], manifests: Sequence[dict], seq_len: int) -> list[dict]:
    """What a checkpoint records of its data: per source name, path, manifest sha256, training samples, weight."""
    return [
        {
            "name": s.name,
            "path": s.path,
            "manifest_sha256": file_sha256(Path(s.path) / "manifest.json"),
            "train_samples": train_samples(m, seq_len),
            "weight": round(s.weight, 12),
        }
        for s, m in zip(mixture, manifests, strict=True)
    ]


def identity_changes(saved: list[dict], now: list[dict]) -> list[str]:
    """Every difference between a checkpoint's data identity and this launch's, by source name (path moves are
    not changes: the manifest hash says whether it is the same data)."""
    before, after = {s["name"]: s for s in saved}, {s["name"]: s for s in now}
    diffs = [f"data source {n!r} removed" for n in before if n not in after]
    diffs += [f"data source {n!r} added" for n in after if n not in before]
    for name in (n for n in before if n in after):
        for key in ("manifest_sha256", "train_samples", "weight"):
            old, new = before[name][key], after[name][key]
            if old != new:
                shown = (old[:12] + "…", new[:12] + "…") if key == "manifest_sha256" else (old, new)
                diffs.append(f"data source {name!r} {key}: {shown[0]} -> {shown[1]}")
    return diffs


def slot_counts(weights: Sequence[float]) -> list[int]:
    """Slots per block for each (normalised) weight, rounded by largest remainder so they sum to BLOCK."""
    exact = [w * BLOCK for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: BLOCK - sum(counts)]:
        counts[i] += 1
    zero = [i for i, c in enumerate(counts) if c == 0]
    if zero:
        raise ConfigError(
            f"data.mix: source {zero[0]} has weight {weights[zero[0]]:.2g} < 1/{BLOCK}; raise it or drop it"
        )
    return counts


class MixtureOrder:
    """Global position -> (source, sample of that source), O(1) per position; see the module docstring."""

    def __init__(self, samples_per_source: Sequence[int], weights: Sequence[float], seed: int) -> None:
        from pretrain.data import SampleOrder, source_seed

        self.slots = np.array(slot_counts(weights), dtype=np.int64)
        self.orders = [SampleOrder(n, source_seed(seed, i)) for i, n in enumerate(samples_per_source)]
        times = [((j + 0.5) / n, s, j) for s, n in enumerate(self.slots.tolist()) for j in range(n)]
        times.sort()
        self.slot_source = np.array([s for _, s, _ in times], dtype=np.int64)  # (BLOCK,)
        self.slot_rank = np.array([j for _, _, j in times], dtype=np.int64)  # the j of each slot
        before = np.zeros((len(self.slots), BLOCK + 1), dtype=np.int64)  # slots of each source before slot r
        before[self.slot_source, np.arange(1, BLOCK + 1)] = 1
        self.slots_before = np.cumsum(before, axis=1)

    def source_positions(self, positions: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, that source's own position) of each global position."""
        block, slot = np.divmod(np.asarray(positions, dtype=np.int64), BLOCK)
        source = self.slot_source[slot]
        return source, block * self.slots[source] + self.slot_rank[slot]

    def take(self, positions: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, sample index in that source) of each global position."""
        source, own = self.source_positions(positions)
        sample = np.empty_like(own)
        for s in np.unique(source):
            here = source == s
            sample[here] = self.orders[s].take(own[here])
        return source, sample

    @property
    def num_samples(self) -> int:
        """Training samples of all sources together (one source: its epoch length)."""
        return sum(order.num_samples for order in self.orders)

    def consumed_per_source(self, consumed_samples: int) -> list[int]:
        """Samples drawn from each source in global positions [0, consumed_samples)."""
        block, slot = divmod(consumed_samples, BLOCK)
        return (block * self.slots + self.slots_before[:, slot]).tolist()

    def epochs(self, consumed_samples: int) -> list[int]:
        """The 0-based epoch each source's next sample is drawn in."""
        consumed = self.consumed_per_source(consumed_samples)
        return [c // order.num_samples for c, order in zip(consumed, self.orders, strict=True)]


def plan_table(mixture: Sequence[Source], samples: Sequence[int], seq_len: int, planned_samples: int) -> list[str]:
    """The per-source table printed before a run (and by `pretrain plan`): tokens, share, epochs at max_steps,
    and a warning for a source repeated more than REPEAT_WARNING_EPOCHS times."""
    block, rest = divmod(planned_samples, BLOCK)
    per_source = [block * n + round(rest * n / BLOCK) for n in slot_counts([s.weight for s in mixture])]
    lines = [f"{'source':<16}{'weight':>8}{'tokens':>16}{'tokens drawn':>16}{'epochs':>9}  path"]
    warnings = []
    for source, n, used in zip(mixture, samples, per_source, strict=True):
        epochs = used / n if n else math.inf
        lines.append(
            f"{source.name:<16}{source.weight:>8.3f}{n * seq_len:>16,}{used * seq_len:>16,}{epochs:>9.3g}  {source.path}"
        )
        if epochs > REPEAT_WARNING_EPOCHS:
            warnings.append(
                f"warning: data source {source.name!r} is repeated {epochs:.3g} times by train.max_steps (more than "
                f"{REPEAT_WARNING_EPOCHS:g}): repeated data stops helping; lower its weight or add data"
            )
    return lines + warnings


def read_manifests(mixture: Sequence[Source]) -> list[dict]:
    """Each source's manifest.json, checked to share one tokenizer."""
    from data_pipeline.shards import read_manifest

    manifests = [read_manifest(s.path) for s in mixture]
    check_one_tokenizer(mixture, manifests)
    return manifests


def open_streams(mixture: Sequence[Source], verify: bool) -> tuple[list, list]:
    """Each source's training stream and validation stream (None where its dataset has no validation split)."""
    from data_pipeline.shards import TokenStream

    train = [TokenStream(s.path, "train", verify=verify) for s in mixture]
    check_one_tokenizer(mixture, [t.manifest for t in train])
    val = [
        TokenStream(s.path, "validation", verify=verify) if "validation" in t.manifest["splits"] else None
        for s, t in zip(mixture, train, strict=True)
    ]
    return train, val


def validation_sets(val_streams: Sequence, seq_len: int, val_samples: int) -> list[list[int]]:
    """Each source's fixed validation windows (`pretrain.data.validation_indices`; none without a split)."""
    from pretrain.data import validation_indices

    return [validation_indices(v, seq_len, val_samples) if v is not None else [] for v in val_streams]


def start_lines(
    mixture: Sequence[Source], train_streams: Sequence, seq_len: int, max_steps: int, global_batch_size: int
) -> list[str]:
    """What the run says about its data before it starts: one dataset's epochs, or the mixture's table."""
    from pretrain.data import epoch_plan

    counts = [t.num_samples(seq_len) for t in train_streams]
    if len(mixture) == 1:
        return epoch_plan(max_steps, global_batch_size, counts[0], seq_len)
    planned = max_steps * global_batch_size
    head = f"data: a mixture of {len(mixture)} sources; {max_steps:,} steps x {global_batch_size:,} samples of {seq_len} tokens"
    return [head, *plan_table(mixture, counts, seq_len, planned)]
