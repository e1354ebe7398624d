"""The layering DESIGN.md promises: infra/ imports neither half, the pipeline never loads torch or pretrain, and
pretrain takes from the pipeline only the shard contract (data_pipeline/shards.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARD_CONTRACT = "data_pipeline.shards"


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every absolute module each file of `package` imports (at any depth of the file: lazy imports count)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_pretrain_takes_only_the_shard_contract_from_the_pipeline() -> None:
    offending = {
        (path, name)
        for path, names in imported_modules("pretrain").items()
        for name in names
        if name.startswith("data_pipeline") and not name.startswith(SHARD_CONTRACT)
    }
    assert not offending, f"pretrain imports pipeline modules other than {SHARD_CONTRACT}: {sorted(offending)}"


def test_the_shared_layer_imports_neither_half() -> None:
    offending = {
        (path, name)
        for path, names in imported_modules("infra").items()
        for name in names
        if name.split(".")[0] in ("pretrain", "data_pipeline", "torch", "deepspeed")
    }
    assert not offending, sorted(offending)
