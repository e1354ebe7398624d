"""What connects a run's checkpoints to inference and the Hugging Face ecosystem: loading a run's consolidated
weights, config, tokenizer and device (consolidated.py, shared by export, generate and evaluate), the weight
mapping (hf.py), the tokenizer conversion (hf_tokenizer.py) and `pretrain export` (export.py)."""
