"""The documents of lm-eval's `pretrain_text` task: a local JSON-lines file named by `--metadata data_files`.

lm-eval imports this file by path (the task YAML's `!function text_documents.load`) and passes the run's metadata
(and its model arguments) as keyword arguments.
"""

from __future__ import annotations

import datasets


def load(data_files: str | None = None, **_metadata: object) -> datasets.DatasetDict:
    """The file as a datasets.DatasetDict whose `test` split holds one {"text": ...} row per line (read offline)."""
    if not data_files:
        raise ValueError(
            'pretrain_text: name the text with --metadata \'{"data_files": "FILE.jsonl"}\' (one {"text": ...} per line)'
        )
    return datasets.load_dataset("json", data_files={"test": data_files})
