"""Near- and exact-duplicate removal: MinHash signatures, LSH banding, exact keys, distributed clustering, and the
stage that drives them over tasks (stage.py)."""
