"""Write the built-in demo corpus: Python's own documentation (pydoc topics and standard-library docstrings).

Every Python installation ships it, so the demo needs no download; it is real English prose about code, and it
holds natural duplicates: a function re-exported by several modules repeats its docstring verbatim (posixpath /
genericpath / os.path), and the pure-Python and C versions of a module (_pyio / io, _collections_abc /
collections.abc, pickle / _pickle) carry slightly different copies of the same text — exactly what exact and
near dedup are for. The walk is deterministic: sorted module and member names, no modules with side effects.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import yaml

from data_pipeline.errors import PipelineError
from infra.files import atomic_write, write_text

MIN_DOC_CHARS = 200
# GUI toolkits, easter eggs that open browsers or print, the test suite and modules that start interpreters.
SKIP_MODULES = frozenset({
    "antigravity", "this", "tkinter", "turtle", "turtledemo", "idlelib", "test", "lib2to3", "ensurepip",
    "__main__", "__hello__", "__phello__", "_tkinter", "pydoc_data", "xxsubtype", "xxlimited", "xxlimited_35",
})  # fmt: skip
SKIP_PREFIXES = ("_test", "_xx", "test.", "idlelib.", "tkinter.", "lib2to3.")

# Web-text filter defaults drop most API documentation (curly braces in format strings, short lines of code,
# few sentences); this recipe keeps the docstrings while still dropping stubs and code dumps.
DEMO_RECIPE = {
    "filters": {
        "min_words": 30,
        "curly_braces": False,
        "short_lines": False,
        "dup_line_chars": False,
        "terminal_punctuation": False,
        "min_num_sentences": 2,
        "symbol_ratio": False,
        "alpha_words": False,
        "max_newline_word_ratio": 0.5,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT.jsonl", help="where to write the corpus")
    parser.add_argument("--quiet", action="store_true", help="no summary line")


def stdlib_module_names() -> list[str]:
    """Top-level standard-library modules, less the skipped ones, sorted (demo_documents adds their submodules)."""
    return sorted(n for n in sys.stdlib_module_names if n not in SKIP_MODULES and not n.startswith(SKIP_PREFIXES))


def safe_import(name: str):
    """The module, or None when it cannot be imported here (platform-specific, optional C library missing)."""
    argv, sys.argv = sys.argv, [sys.argv[0]]  # a module that parses argv on import sees none
    quiet_output = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()))
    with warnings.catch_warnings(), quiet_output[0], quiet_output[1]:
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - some modules raise SystemExit or odd errors on import
            return None
        finally:
            sys.argv = argv


def submodule_names(module) -> list[str]:
    import pkgutil

    if not hasattr(module, "__path__"):
        return []
    names = (f"{module.__name__}.{m.name}" for m in pkgutil.iter_modules(module.__path__))
    return sorted(n for n in names if not _skipped_submodule(n))


def _skipped_submodule(name: str) -> bool:
    """Tests, and `__main__` submodules: importing venv.__main__ would create a virtualenv from sys.argv."""
    parts = name.split(".")
    return name.startswith(SKIP_PREFIXES) or any(p.startswith(("test", "_test")) or p == "__main__" for p in parts)


def own_doc(obj: object) -> str:
    """The object's own docstring, cleaned; not one inherited from a base class (inspect.getdoc would)."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def documented_members(module) -> Iterator[tuple[str, str]]:
    """(qualname, docstring) of the module, its public classes and functions, and their public methods."""
    yield "", own_doc(module)
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        yield name, own_doc(obj)
        if inspect.isclass(obj):
            for attr in sorted(vars(obj)):
                member = vars(obj)[attr]
                if not attr.startswith("_") and inspect.isroutine(member):
                    yield f"{name}.{attr}", own_doc(member)


def docstring_documents(module) -> Iterator[dict[str, str]]:
    for qualname, doc in documented_members(module):
        if len(doc) >= MIN_DOC_CHARS:
            where = f"{module.__name__}.{qualname}" if qualname else module.__name__
            yield {"id": f"docstring:{where}", "text": doc, "source": f"docstring:{where}"}


def topic_documents() -> Iterator[dict[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"id": f"pydoc:{name}", "text": topics[name], "source": f"pydoc:{name}"}


def demo_documents() -> Iterator[dict[str, str]]:
    """pydoc topics, then the docstrings of every importable stdlib module and its submodules, in sorted order."""
    yield from topic_documents()
    for name in stdlib_module_names():
        module = safe_import(name)
        if module is None:
            continue
        yield from docstring_documents(module)
        for sub in submodule_names(module):
            submodule = safe_import(sub)
            if submodule is not None:
                yield from docstring_documents(submodule)


def recipe_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".recipe.yaml")


def write_documents(out: Path) -> None:
    """Write the walk's documents to `out` (run in a fresh interpreter: see write_demo_corpus)."""
    seen: set[str] = set()
    with open(out, "w", encoding="utf-8") as f:
        for doc in demo_documents():
            if doc["id"] not in seen:  # a module reachable under two names is written once
                seen.add(doc["id"])
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def write_demo_corpus(out: Path) -> tuple[int, int]:
    """Write OUT.jsonl and its matching recipe OUT.recipe.yaml; returns (documents, bytes).

    The walk imports hundreds of modules, so it runs in a fresh, isolated interpreter (`python -I`): the corpus
    is the same whatever the caller had imported or patched, and the imports' side effects stay out of it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    package_root = str(Path(__file__).resolve().parents[1])
    with atomic_write(out, "wb") as corpus:  # the walk writes the temporary file by name; this fsyncs and renames it
        code = f"import sys; sys.path.insert(0, {package_root!r}); from data_pipeline.demo_corpus import write_documents; write_documents(__import__('pathlib').Path({corpus.name!r}))"
        walk = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=900)
        if walk.returncode != 0:
            raise PipelineError(f"the standard-library walk failed: {walk.stderr.strip().splitlines()[-1:]}")
    write_text(recipe_path(out), yaml.safe_dump(DEMO_RECIPE, sort_keys=False))
    with open(out, encoding="utf-8") as f:
        count = sum(1 for _ in f)
    return count, out.stat().st_size


def run(args: argparse.Namespace) -> int:
    try:
        count, size = write_demo_corpus(args.out)
    except OSError as e:
        raise PipelineError(f"cannot write {args.out}: {e}") from e
    if not args.quiet:
        print(
            f"demo-corpus: {count} documents, {size / 1e6:.1f} MB -> {args.out}; "
            f"recipe for docstrings -> {recipe_path(args.out)} (use --config with it)",
            file=sys.stderr,
        )
    return 0
