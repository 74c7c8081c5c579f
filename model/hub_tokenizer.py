"""The tokenizers hub folders ship (``tokenizer.json``), with open_clip's cleaning and padding.

SigLIP (T5-style SentencePiece Unigram), SigLIP 2 (Gemma SentencePiece BPE with byte fallback)
and XLM-RoBERTa (SentencePiece Unigram with the fairseq id offset) all come as a Hugging Face
``tokenizer.json``: the normaliser, pre-tokenizer, model and the template that appends the end
id (and the start id for XLM-R). It is read with the ``tokenizers`` library, not re-implemented;
what open_clip adds around it is done here:

1. clean each text (``clean``): ``"canonicalize"`` (ftfy, HTML unescaped twice, ``_`` -> space,
   ASCII punctuation removed, lower case, whitespace collapsed; SigLIP), ``"whitespace"`` (ftfy,
   HTML, whitespace collapsed; XLM-R, cased) or ``"lower"`` (the same, lower-cased);
2. encode, truncated to the context length with the template's special ids kept (the end id stays
   last), and padded to the context length with the folder's pad token
   (``special_tokens_map.json`` / ``tokenizer_config.json``: ``</s>`` for SigLIP, ``<pad>`` for
   SigLIP 2 and XLM-R).

NLLB (``"tokenizer_class": "NllbTokenizer"`` in ``tokenizer_config.json``) starts every text with
a FLORES-200 language code: ``[lang] text </s>``, the code the folder's ``src_lang`` names
(``eng_Latn`` when none), as open_clip's tokenizer does by default; :meth:`HubTokenizer.
set_language` (or ``language=``) picks another, as open_clip's ``set_language`` is meant to;
``tokenizer(texts, language="fra_Latn")`` picks one for a single call, without changing the
tokenizer (what a server reading each query in its own language needs).
"""

from __future__ import annotations

import html
import json
import logging
import string
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
import torch
from tokenizers import Tokenizer as _Tokenizer

from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.json_types import JSONObject

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
CLEAN_MODES = ("canonicalize", "whitespace", "lower")
_WHITESPACE = regex.compile(r"\s+")
# FLORES-200 language codes as NLLB's vocabulary holds them: eng_Latn, zho_Hans, ...
_LANGUAGE_CODE = regex.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_NLLB_CLASSES = ("NllbTokenizer", "NllbTokenizerFast")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# As model.tokenizer: bound the work on huge input; no context holds this many characters' ids.
_MAX_CHARS = 16384


def _basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def clean_text(text: str, mode: str) -> str:
    """open_clip's text cleaning (``tokenizer_kwargs.clean``) of one text."""
    text = _basic_clean(text[:_MAX_CHARS])
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    elif mode == "lower":
        text = text.lower()
    elif mode != "whitespace":
        raise ModelError(f"unknown text cleaning {mode!r}; expected one of {CLEAN_MODES}")
    return _WHITESPACE.sub(" ", text).strip()


def _special_token(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_json(path: Path) -> JSONObject:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


class HubTokenizer:
    """``HubTokenizer(folder, clean="canonicalize")(["a dog"], context_length=64)`` ->
    LongTensor [1, 64]: the ids open_clip's ``HFTokenizer`` gives for that folder."""

    def __init__(
        self, folder: str | Path, clean: str = "whitespace", language: str | None = None
    ) -> None:
        if clean not in CLEAN_MODES:
            raise ModelError(f"unknown text cleaning {clean!r}; expected one of {CLEAN_MODES}")
        folder = Path(folder)
        path = folder / TOKENIZER_JSON
        if not path.is_file():
            raise CheckpointError(
                f"{folder}: no {TOKENIZER_JSON}; this model's tokenizer comes with its hub folder "
                "(download tokenizer.json, tokenizer_config.json and special_tokens_map.json "
                "with the weights)"
            )
        try:
            self._tok = _Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions on a bad file
            raise CheckpointError(f"{path}: not a readable tokenizer.json: {exc}") from exc
        self.folder = folder
        self.clean = clean
        self.pad_token = self._find_pad_token(folder)
        pad_id = self._tok.token_to_id(self.pad_token)
        if pad_id is None:
            raise CheckpointError(
                f"{path}: the pad token {self.pad_token!r} named by the folder is not in the "
                "vocabulary"
            )
        self.pad_id: int = pad_id
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._tok.no_truncation()
        self._tok.no_padding()
        # NLLB: [language code] text </s>, the code chosen here rather than by the template.
        self.language: str | None = None
        self._lang_id: int | None = None
        self._eos_id: int | None = None
        self._languages: tuple[str, ...] | None = None
        config = folder / "tokenizer_config.json"
        settings = _read_json(config) if config.is_file() else {}
        if settings.get("tokenizer_class") in _NLLB_CLASSES:
            eos = _special_token(settings.get("eos_token")) or "</s>"
            self._eos_id = self._tok.token_to_id(eos)
            if self._eos_id is None:
                raise CheckpointError(f"{path}: the end token {eos!r} is not in the vocabulary")
            self.set_language(language or str(settings.get("src_lang") or "eng_Latn"))
        elif language is not None:
            raise ModelError(
                f"this model's tokenizer ({folder}) takes no language code; drop language="
            )

    @staticmethod
    def _find_pad_token(folder: Path) -> str:
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = folder / name
            if path.is_file():
                token = _special_token(_read_json(path).get("pad_token"))
                if token:
                    return token
        raise CheckpointError(
            f"{folder}: no pad token: expected special_tokens_map.json or tokenizer_config.json "
            "naming pad_token beside tokenizer.json"
        )

    @property
    def languages(self) -> list[str]:
        """The language codes this tokenizer knows (NLLB: the 202 FLORES-200 codes), sorted."""
        if self._eos_id is None:
            return []
        if self._languages is None:  # the vocabulary never changes: read it once
            self._languages = tuple(
                sorted(
                    t
                    for t in self._tok.get_vocab(with_added_tokens=True)
                    if _LANGUAGE_CODE.fullmatch(t)
                )
            )
        return list(self._languages)

    def language_id(self, language: str) -> int:
        """The id of a language code (NLLB), e.g. ``"fra_Latn"``; :class:`ModelError` naming
        the code when this tokenizer has no such code, or takes none."""
        if self._eos_id is None:
            raise ModelError(f"this model's tokenizer ({self.folder}) takes no language code")
        ok = isinstance(language, str) and _LANGUAGE_CODE.fullmatch(language) is not None
        lang_id = self._tok.token_to_id(language) if ok else None
        if lang_id is None:
            known = self.languages
            shown = language[:40] if isinstance(language, str) else language
            raise ModelError(
                f"unknown language code {shown!r}: expected a FLORES-200 code such as "
                f"eng_Latn, fra_Latn, zho_Hans ({len(known)} known: {', '.join(known[:6])}, ...)"
            )
        return int(lang_id)

    def set_language(self, language: str) -> None:
        """Start every text with this language code (NLLB), e.g. ``"fra_Latn"``: the default of
        later calls. A tokenizer shared between threads is better given ``language=`` per call
        (``tokenizer(texts, language="fra_Latn")``), which changes nothing shared."""
        lang_id = self.language_id(language)
        self.language, self._lang_id = language, lang_id

    def __repr__(self) -> str:
        return f"HubTokenizer({str(self.folder)!r}, clean={self.clean!r})"

    def __call__(
        self, texts: str | Sequence[str], context_length: int = 64, language: str | None = None
    ) -> torch.Tensor:
        """Token ids [N, context_length]. ``language`` (NLLB): the code these texts start with
        instead of the tokenizer's :attr:`language`, for this call only (nothing shared changes,
        so threads may each ask for their own); a tokenizer without language codes refuses it."""
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ModelError(f"context_length must be at least 2, got {context_length}")
        lang_id, eos_id = self._lang_id, self._eos_id
        if language is not None:
            lang_id = self.language_id(language)
        cleaned = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ModelError(f"the tokenizer takes str; item {i} is {type(text).__name__}")
            cleaned.append(clean_text(text, self.clean))
        out = torch.full((len(cleaned), context_length), self.pad_id, dtype=torch.long)
        if not cleaned:
            return out
        # As transformers' truncation does it: the text's own ids are cut to leave room for the
        # template's special ids, which are then added (the end id stays last). Done on each
        # encoding, so a tokenizer shared between threads is never reconfigured.
        if lang_id is not None and eos_id is not None:
            room = context_length - 2  # [lang] ... </s>
        else:
            room = context_length - self._tok.num_special_tokens_to_add(False)
        if room < 0:
            raise ModelError(f"context_length {context_length} cannot hold the special tokens")
        for row, enc in enumerate(self._tok.encode_batch(cleaned, add_special_tokens=False)):
            if lang_id is not None and eos_id is not None:
                ids = [lang_id, *enc.ids[:room], eos_id]
            else:
                if len(enc.ids) > room:
                    enc.truncate(room)
                ids = self._tok.post_process(enc, None, add_special_tokens=True).ids
            ids = ids[:context_length]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))
