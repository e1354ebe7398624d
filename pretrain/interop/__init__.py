"""What connects a run to the Hugging Face ecosystem: the weight mapping (hf.py), the tokenizer conversion
(hf_tokenizer.py), loading consolidated weights and `pretrain export` (export.py)."""
