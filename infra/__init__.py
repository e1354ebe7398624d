"""The shared layer: torch-free infrastructure that both halves use and that imports neither of them.

`files` (atomic writes, sha256), `launcher_env` (what deepspeed/torchrun, mpiexec, Open MPI and SLURM set),
`config_schema` (the one config mechanism), `errors` (the user-error base and the exit codes both CLIs share)
and `cli` (the one subcommand dispatcher). `data_pipeline` and `pretrain` build on it; it never imports them.
"""
