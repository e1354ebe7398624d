"""Every pipeline module imports in a fresh interpreter without loading torch or pretrain (the import-graph checks are
tests/unit/test_layering.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_pipeline_module_imports_without_torch_or_pretrain() -> None:
    """A fresh interpreter imports every module of data_pipeline and infra; neither torch nor pretrain may load."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import data_pipeline, infra\n"
        "for pkg in (data_pipeline, infra):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pretrain', 'deepspeed')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", f"the pipeline loaded: {done.stdout.strip()[:500]}"
