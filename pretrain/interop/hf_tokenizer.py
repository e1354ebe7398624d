"""The run's SentencePiece model as a Hugging Face tokenizer that encodes exactly like sentencepiece.

transformers' own SpmConverter assumes Llama's settings (dummy prefix, whitespace stripping, NFKC charsmap) and
warns that byte fallback is lost for most families. Our tokenizer is trained with identity normalisation and
byte fallback, so the `tokenizers` pipeline is assembled here from the .model's own normalizer/trainer specs:
every option sentencepiece applies at encode time is either reproduced or refused with a message.
The result is a `tokenizer.json` + `tokenizer_config.json` that `AutoTokenizer.from_pretrained` loads offline.

tests/unit/test_export_tokenizer.py checks the ids against sentencepiece for both model types (bpe, unigram) on varied text.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE, Unigram
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import generate_merges

from pretrain.errors import PretrainError

SPIECE_UNDERLINE = "▁"
_UNIGRAM, _BPE = 1, 2
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def load_spm_proto(model_path: str | os.PathLike) -> sentencepiece_model_pb2.ModelProto:
    """Parse a SentencePiece .model file into its protobuf (sentencepiece ships the generated module)."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_path).read_bytes())
    return proto


def _check_supported(proto, model_path: str | os.PathLike) -> None:
    if proto.trainer_spec.model_type not in (_UNIGRAM, _BPE):
        raise PretrainError(
            f"{model_path}: model_type {proto.trainer_spec.model_type} is not unigram or bpe; "
            "retrain the tokenizer with tokenizer.model_type=bpe or unigram"
        )
    if proto.trainer_spec.treat_whitespace_as_suffix:
        raise PretrainError(f"{model_path}: treat_whitespace_as_suffix=true is not supported by the export")


def _model(proto):
    """The BPE/Unigram model with sentencepiece's scores; BPE merges are ordered by the merged piece's score."""
    spec = proto.trainer_spec
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if spec.model_type == _UNIGRAM:
        return Unigram(_unigram_scores(proto), unk_id=spec.unk_id, byte_fallback=spec.byte_fallback)
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    atomic = {p.piece for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE)}
    merges = generate_merges(vocab, pieces, skip_tokens=atomic)
    return BPE(vocab, merges, unk_token=spec.unk_piece, fuse_unk=True, byte_fallback=spec.byte_fallback)


def _unigram_scores(proto) -> list[tuple[str, float]]:
    """Piece scores for the Unigram lattice, with control/unknown/byte/unused pieces priced out of it.

    sentencepiece never matches those pieces against text (a literal "</s>" is spelled out), but `tokenizers`
    puts every vocabulary piece in its lattice. A score far below any real segmentation keeps them out. The
    unknown-character penalty `tokenizers` derives from the lowest score moves with it, which changes nothing:
    a character outside the trained alphabet is in no piece, so every segmentation pays the same penalty there.
    """
    normal = [p.score for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)]
    floor = min(normal, default=0.0) - 1e6
    atomic = (_UNKNOWN, _CONTROL, _UNUSED, _BYTE)
    return [(p.piece, floor if p.type in atomic else p.score) for p in proto.pieces]


def _normalizer(proto):
    """Charsmap (empty for identity), whitespace cleanup, dummy prefix, then spaces to the meta symbol."""
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        # sentencepiece strips and collapses ASCII spaces only, never tabs or newlines
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPIECE_UNDERLINE))
    steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
    return normalizers.Sequence(steps)


def _pre_tokenizer(proto):
    """sentencepiece never lets a piece cross a word start (split_by_whitespace).

    `split_digits` needs nothing here: it only shapes the trained vocabulary (no multi-digit pieces); encoding
    runs over whole words, so runs of unknown characters, digits included, fuse into one <unk> as in spm.
    """
    spec = proto.trainer_spec
    steps = []
    if spec.split_by_whitespace:
        steps.append(pre_tokenizers.Split(_word_pattern(spec), behavior="isolated"))
    return pre_tokenizers.Sequence(steps) if steps else None


def _word_pattern(spec) -> Regex:
    """sentencepiece's word split: a word starts at each space, or at a run of spaces if those may form pieces."""
    if spec.allow_whitespace_only_pieces:
        return Regex(f"{SPIECE_UNDERLINE}*[^{SPIECE_UNDERLINE}]+|{SPIECE_UNDERLINE}+")
    return Regex(f"{SPIECE_UNDERLINE}?[^{SPIECE_UNDERLINE}]+|{SPIECE_UNDERLINE}")


def _decoder(proto):
    steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    return decoders.Sequence(steps)


def build_tokenizer(model_path: str | os.PathLike) -> Tokenizer:
    """A `tokenizers.Tokenizer` whose ids equal `SentencePieceProcessor.encode` on any text."""
    proto = load_spm_proto(model_path)
    _check_supported(proto, model_path)
    tokenizer = Tokenizer(_model(proto))
    tokenizer.normalizer = _normalizer(proto)
    if (pre := _pre_tokenizer(proto)) is not None:
        tokenizer.pre_tokenizer = pre
    tokenizer.decoder = _decoder(proto)
    specials = [p.piece for p in proto.pieces if p.type == _CONTROL]
    user = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    tokenizer.encode_special_tokens = True  # sentencepiece spells a literal "</s>" in text as characters
    return tokenizer


def _special_token_names(proto) -> dict[str, str]:
    """bos/eos/unk/pad as transformers names them, for the ids the trainer's data actually uses."""
    spec, pieces = proto.trainer_spec, proto.pieces
    names = {}
    for key, index in (("bos_token", spec.bos_id), ("eos_token", spec.eos_id), ("unk_token", spec.unk_id)):
        if 0 <= index < len(pieces):
            names[key] = pieces[index].piece
    if 0 <= spec.pad_id < len(pieces):
        names["pad_token"] = pieces[spec.pad_id].piece
    return names


def save_hf_tokenizer(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_max_length: int,
    special_ids: dict[str, int | None] | None = None,
) -> Path:
    """Write tokenizer.json/tokenizer_config.json into `out_dir` for AutoTokenizer, from the dataset's tokenizer:
    a SentencePiece .model (converted, the original copied beside; its own specs name the special tokens) or an
    adopted Hugging Face tokenizer.json (the manifest's `special_ids` name them)."""
    if Path(model_path).suffix == ".json":
        return _save_adopted(Path(model_path), Path(out_dir), model_max_length, special_ids or {})
    proto = load_spm_proto(model_path)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(model_path),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=True,
        **_special_token_names(proto),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    shutil.copyfile(model_path, out / "sentencepiece.model")
    return out


def _save_adopted(json_path: Path, out: Path, model_max_length: int, special_ids: dict[str, int | None]) -> Path:
    """A dataset made with `tokenizer.from=FOLDER` keeps that folder's tokenizer.json: exported as it is, with the
    special tokens the dataset's manifest records (eos is the id the shards end each document with)."""
    tokenizer = Tokenizer.from_file(str(json_path))
    names = {
        key.replace("_id", ""): tokenizer.id_to_token(index)
        for key, index in special_ids.items()
        if index is not None and tokenizer.id_to_token(index) is not None
    }
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=model_max_length, clean_up_tokenization_spaces=False, **names
    )
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    return out
