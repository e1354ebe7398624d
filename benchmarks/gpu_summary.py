"""gpu_run.sh's summary: every measurement JSON and CUDA test of OUTDIR/results in one JSON and one markdown table.

    python benchmarks/gpu_summary.py OUTDIR [--print]

Writes OUTDIR/summary.json (the measurement JSONs, the stage records and one row per CUDA test from pytest's junit
XML, also written as OUTDIR/results/cuda_tests.json) and OUTDIR/summary.md (a table to paste into BENCHMARKS.md).
Standard library only, so it runs after every stage in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

COLUMNS = ("group", "side", "status", "tokens/s", "TFLOP/s", "MFU", "peak GiB", "x reference", "first loss")


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def cuda_test_results(xml: Path) -> list[dict]:
    """pytest's junit XML as {"test", "status", "seconds", "message"} rows (status passed/failure/error/skipped)."""
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status, message = tag, (node.get("message") or "")[:500]
        name = f"{case.get('classname')}::{case.get('name')}"
        rows.append({"test": name, "status": status, "seconds": float(case.get("time", 0)), "message": message})
    return rows


def summary_rows(results: Path) -> list[dict]:
    stages = [json.loads(p.read_text()) for p in sorted(results.glob("stage__*.json"), key=lambda p: p.stat().st_mtime)]
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*__*.json")) if not p.name.startswith("stage__")]
    for name in ("cuda_tests", "two_gpu_tests"):  # pytest's junit XML of the CUDA and the 2-GPU checks
        if (results / f"{name}.xml").is_file():
            tests = cuda_test_results(results / f"{name}.xml")
            (results / f"{name}.json").write_text(json.dumps(tests, indent=1) + "\n")
            rows += tests
    return stages + rows


def table_row(r: dict) -> list[str] | None:
    if "test" in r:
        return ["test", r["test"], r["status"], *[""] * 6]
    if "stage" in r:  # finished, cut (ran out of its time and was killed with its process tree), failed, skipped
        return ["stage", r["stage"], f"{r['status']} after {r['seconds']} of {r['limit_s']} s", *[""] * 6]
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('error') or '')[:80]}"
    ratio = r.get("context", {}).get("ratio_over_reference")
    return [
        r["group"],
        r["name"],
        status,
        fmt(r.get("tokens_per_s"), ",.0f"),
        fmt(r.get("tflops"), ".1f"),
        fmt(r.get("mfu"), ".3f"),
        fmt(r.get("peak_mem_gib"), ".1f"),
        fmt(ratio, ".3f"),
        fmt(r.get("first_loss"), ".4f"),
    ]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = table_row(r)
        if cells is not None:
            lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--print", action="store_true", help="print the markdown table too")
    args = p.parse_args(argv)
    rows = summary_rows(args.outdir / "results")
    (args.outdir / "summary.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    table = markdown_table(rows)
    (args.outdir / "summary.md").write_text(table)
    if args.print:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
