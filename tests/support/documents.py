"""Hand-written documents and real text the tests share, and the dedup output's kept/ format.

`GOOD` is prose that passes every quality rule; `PYTHON_SOURCE` and `MAN_PAGE` are what the web profile drops
and the code/docs profiles keep; `stdlib_docs` is an English+code corpus present on every machine. Generated
text is `support.corpus`.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from pathlib import Path

GOOD = (
    "The river town woke slowly under a pale morning sky, and the bakers opened their doors first.\n"
    "Children walked to school along the old stone bridge with their bags and their small lunches.\n"
    "A fisherman repaired his nets near the harbor while gulls argued over scraps of bread.\n"
    "By noon the market square was crowded with farmers selling apples, cheese and fresh honey.\n"
    "Visitors often asked about the clock tower, which had stopped at a quarter past three years ago.\n"
    "Nobody in town seemed to mind, because the bells still rang for weddings and for every harvest festival."
)


# What an exported tokenizer must give back exactly as SentencePiece does: spaces, control text, ligatures, CJK.
ROUND_TRIP_TEXTS = [
    "Hello world",
    "",
    " ",
    "   leading, inner  double   and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\n",
    "def f(a, b):\n    return a + b  # comment\n",
    "12345 67.89 3.14159e-10 0x1F",
    "héllo ünïcode naïve café, Ærøskøbing, straße",
    "日本語のテキストと中文和한국어",
    "emoji 🤗🚀 and symbols ∑∫√≠ ① ﬁ",
    "literal control text <s> </s> <unk> <pad> <0x41>",
    "a\u00a0non-breaking\u2009thin\u200bzero-width space",
    "mixed\r\nline\rendings",
]

PYTHON_SOURCE = '''"""Small helpers for reading settings files."""

import json
import os


def load_settings(path, defaults=None):
    """Read a JSON settings file and fill in the defaults."""
    settings = dict(defaults or {})
    if os.path.exists(path):
        with open(path) as f:
            settings.update(json.load(f))
    return settings


class Cache:
    def __init__(self, size=128):
        self.size = size
        self.items = {}

    def get(self, key):
        return self.items.get(key)

    def put(self, key, value):
        if len(self.items) >= self.size:
            self.items.pop(next(iter(self.items)))
        self.items[key] = value
'''


def python_file(i: int) -> str:
    """PYTHON_SOURCE with its function renamed: distinct files that are not exact duplicates."""
    return PYTHON_SOURCE.replace("load_settings", f"load_settings_{i}")


MAN_PAGE = """NAME
       gzip, gunzip - compress or expand files

SYNOPSIS
       gzip [ -acdfhklLnNrtvV19 ] [-S suffix] [ name ...  ]

DESCRIPTION
       Gzip reduces the size of the named files using Lempel-Ziv coding (LZ77). Whenever possible, each file is
       replaced by one with the extension .gz, while keeping the same ownership modes, access and modification
       times. If no files are specified, or if a file name is "-", the standard input is compressed to the
       standard output. Gzip will only attempt to compress regular files. In particular, it will ignore
       symbolic links.

OPTIONS
       -c --stdout --to-stdout
              Write output on standard output; keep original files unchanged.
       -d --decompress --uncompress
              Decompress.
       -k --keep
              Keep (don't delete) input files during compression or decompression.
       -r --recursive
              Travel the directory structure recursively. If any of the file names specified on the command
              line are directories, gzip will descend into the directory and compress all the files it finds.
       -t --test
              Test. Check the compressed file integrity.
       -v --verbose
              Verbose.
       -V --version
              Version.
       -# --fast --best
              Regulate the speed of compression.
       -f --force
              Force.
       -l --list
              List.
       -n --no-name
              No name.
       -q --quiet
              Quiet.
       -L --license
              License.
       -h --help
              Help.

SEE ALSO
       znew(1), zcmp(1), zmore(1), zforce(1), gzexe(1), zip(1), unzip(1), compress(1)
"""


def stdlib_docs(count: int = 120) -> list[str]:
    """A deterministic English+code corpus present on every machine: the standard library's module sources,
    read as text (docstring plus the first lines of code), never imported."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        doc = ast.get_docstring(ast.parse(source)) or ""
        if len(doc) > 200:
            docs.append(doc + "\n\n" + "\n".join(source.splitlines()[:60]))
        if len(docs) == count:
            break
    return docs


def write_kept(folder: Path, texts: list[str], parts: int = 1) -> Path:
    """kept/part-NNNNN.jsonl in the dedup output's format, split into `parts` contiguous parts."""
    kept = folder / "kept"
    kept.mkdir(parents=True, exist_ok=True)
    for p in range(parts):
        share = range(p * len(texts) // parts, (p + 1) * len(texts) // parts)
        lines = [json.dumps({"id": f"doc-{i:06d}", "text": texts[i], "source": "test"}) for i in share]
        (kept / f"part-{p:05d}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder
