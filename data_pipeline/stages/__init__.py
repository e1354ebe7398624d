"""The orchestration of the `pipeline` commands: which phases run, in which order, on every rank.

| module | holds |
| --- | --- |
| `dedup.py` | `pipeline dedup`: identify inputs → plan → scan → dedup → write → finish |
| `run.py` | `pipeline run`: the dedup stage, then the tokenize stage |
| `tokenize.py` | the tokenize stage: SentencePiece on kept/ → Arrow token shards → manifest.json |
| `plan.py` | phase 1: what a run is given (`DedupJob`), the tasks and their ranks (`Plan`) |
| `scan.py` | phase 2: each task through the steps, its work files on disk |
| `duplicates.py` | phase 3: exact and near dedup over all ranks (`Removals`) |
| `write.py` | phase 4: kept/ parts and dedup/clusters.jsonl |
| `finish.py` | phase 5: ledger check, stats.json, the stage marker, the summary |
| `execution.py` | a task run once behind its marker, timings, inputs' identities |
| `outputs.py` | the output folder's names and its atomic, hashed files |

A phase is a function: inputs in, a value out, and every collective it makes in its own body (its docstring
names them). The algorithms it calls (data_pipeline/dedup/, filters.py, steps.py) never import this package.
"""
