"""Every entry point ends a fault the user can fix with exit status 2 and one `error:` line, no traceback; and
every exception class of `pretrain` and `data_pipeline` has its package's one base (README.md, "Exit codes").

The `pretrain` subcommands run in this process through `pretrain.cli.main` (the function the console script
exits with), so torch is imported once; `pretrain plot`, the trainer and the `pipeline` subcommands run as real
processes to check the status the shell sees. No DeepSpeed training here: a corrupt checkpoint is a tag folder
with a COMPLETE marker and a MANIFEST.sha256.json that does not match its one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from support.exit_checks import assert_one_error_line, corrupted_tag, saved_tag

import data_pipeline
import pretrain
from data_pipeline.errors import PipelineError
from pretrain import cli
from pretrain.errors import PretrainError


@pytest.fixture()
def corrupt_tag(tmp_path: Path) -> Path:
    return corrupted_tag(tmp_path / "run")


def pretrain_in_process(capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ("plan --preset debug --mfu 2", ["--mfu", "got 2.0", "(see pretrain plan --help)"]),
        ("plan --preset debug --world-size 12", ["--world-size: 12 GPUs"]),
        ("plan --preset debug --set model.nope=1", ["model.nope"]),
        ("generate {tmp} --prompt x --top-p 1.5", ["--top-p must be in (0, 1], got 1.5"]),
        ("generate {tmp}/missing --prompt x", ["no complete checkpoint", "{tmp}/missing"]),
        ("evaluate {tmp} --samples 0", ["--samples must be >= 1, got 0", "--help"]),
        ("evaluate {tmp}/missing", ["no complete checkpoint"]),
        ("export {tmp}/missing {tmp}/hf", ["no complete checkpoint"]),
        ("plot {tmp}", ["{tmp}/metrics.csv: no metrics file"]),
    ],
)
def test_pretrain_subcommand_fault_is_one_line_and_exit_2(argv, named, tmp_path, capsys) -> None:
    fill = {"tmp": str(tmp_path)}
    status, err = pretrain_in_process(capsys, *argv.format(**fill).split())
    command = argv.split()[0]
    assert_one_error_line(f"pretrain {command}: error: ", status, err, *(n.format(**fill) for n in named))


@pytest.mark.parametrize("command", ["export", "generate", "evaluate"])
def test_corrupt_checkpoint_is_one_line_naming_the_file(command, corrupt_tag, tmp_path, capsys) -> None:
    extra = {"export": [str(tmp_path / "hf")], "generate": ["--prompt", "x"], "evaluate": []}[command]
    status, err = pretrain_in_process(capsys, command, str(corrupt_tag), *extra)
    assert_one_error_line(f"pretrain {command}: error: ", status, err, "optim_states.pt: sha256 mismatch")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(("config_yaml", "named"), [(None, "missing"), ("a: [", "not valid YAML")])
def test_a_run_folder_without_a_readable_config_is_one_line(config_yaml, named, tmp_path, capsys) -> None:
    """An intact checkpoint whose RUN/config.yaml is gone or damaged: named, before DeepSpeed is asked."""
    saved_tag(tmp_path / "run")
    if config_yaml is not None:
        (tmp_path / "run" / "config.yaml").write_text(config_yaml)
    status, err = pretrain_in_process(capsys, "export", str(tmp_path / "run"), str(tmp_path / "hf"))
    assert_one_error_line("pretrain export: error: ", status, err, f"{tmp_path / 'run' / 'config.yaml'}: {named}")


def exception_classes(package) -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of `package` (imported one by one), by qualified name."""
    found = {}
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{obj.__qualname__}"] = obj
    return found


# Signals, not errors: they end a command with 130/143 like Ctrl-C does, so they are KeyboardInterrupts.
SIGNAL_CLASSES = {"data_pipeline.executor.Terminated"}


@pytest.mark.parametrize(("package", "base"), [(pretrain, PretrainError), (data_pipeline, PipelineError)])
def test_every_exception_class_has_its_package_base(package, base) -> None:
    classes = exception_classes(package)
    assert base in classes.values()  # the walk did find the errors module
    signals = {name for name, cls in classes.items() if issubclass(cls, KeyboardInterrupt)}
    assert signals == (SIGNAL_CLASSES if package is data_pipeline else set())
    stray = sorted(name for name, cls in classes.items() if name not in signals and not issubclass(cls, base))
    assert stray == [], f"subclass {base.__name__} (or merge into it): {stray}"
    if package is pretrain:  # no error doubles as a builtin one (CheckpointCorrupt was a FileNotFoundError)
        builtin_bases = {b for cls in classes.values() for b in cls.__mro__ if b.__module__ == "builtins"}
        assert builtin_bases == {Exception, BaseException, object}
