"""What the test tiers share: the synthetic corpus, the tiny dataset, launching the trainer, fault injection.

`tests/` is on sys.path (pyproject.toml's pytest `pythonpath`), so a test imports `from support.launch import ...`.
The scripts here that run as their own processes (fault_inject_train.py, init_from_hf_engine.py,
zero3_positions.py, pipeline_faults/sitecustomize.py) are named by path by the integration tests.
"""
