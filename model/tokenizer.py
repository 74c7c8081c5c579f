"""CLIP's byte-level BPE tokenizer, giving the reference ids for any string.

The pipeline is the one CLIP was trained with:

1. clean: ``ftfy.fix_text``, HTML entities unescaped twice, surrounding space stripped, every run
   of whitespace collapsed to one space, lower-cased;
2. split into words with CLIP's regular expression (letters, single digits, runs of punctuation,
   English contractions);
3. map each word's UTF-8 bytes to printable characters (``bytes_to_unicode``) and merge them with
   the BPE merge table, lowest rank first; the last symbol of a word carries ``</w>``;
4. look the merged symbols up in the vocabulary (256 byte symbols, the same with ``</w>``, one per
   merge, then ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407).

``Tokenizer()(texts)`` wraps each text in start/end ids and pads with 0 to the context length; a
longer text is cut so that the end id stays last. It never raises on a string: very long input is
cut before cleaning to a prefix that holds far more than a context's worth of words, so the work
per text is bounded.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import heapq
import html
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import ftfy
import regex
import torch

from clipsearch.model.errors import ModelError

log = logging.getLogger(__name__)

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
# The merge lines used by CLIP: the vocabulary is 49408 = 2 * 256 byte symbols + merges + 2 specials.
_NUM_MERGES = 49152 - 256 - 2

# CLIP's word splitter. The specials come first so that they stay whole.
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")
# Input longer than this many non-space characters is cut to its first _MAX_CHARS of them before
# cleaning. Every vocabulary symbol spans at most a few dozen characters, so 77 ids never need more
# than a few thousand; the cap only bounds the work on huge input (a pasted book, a 1 MB string).
_MAX_CHARS = 8192
_FIRST_NONSPACE = regex.compile(r"(?:\s*+\S){" + str(_MAX_CHARS) + "}")
_LONG_INPUT = 4 * _MAX_CHARS
_SPACE_RUN = regex.compile(r"\s{2,}")
# Words up to this many symbols use the straightforward merge loop; longer ones the heap version.
_SHORT_WORD = 64


def default_bpe_path() -> Path:
    """The packaged BPE merges file (``model/assets/bpe_simple_vocab_16e6.txt.gz``)."""
    return Path(__file__).resolve().parent / "assets" / BPE_FILENAME


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map of the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others (controls, space, a few more) are
    shifted past 255, so no byte becomes whitespace or a control character the BPE would see.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table  # insertion order (printable bytes first) is the vocabulary's order


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _load_merges(path_str: str, check_hash: bool) -> tuple[tuple[str, str], ...]:
    """The merge pairs of a BPE file, in rank order (cached per path)."""
    path = Path(path_str)
    if not path.is_file():
        raise ModelError(
            f"BPE vocabulary file not found: {path}. Expected CLIP's {BPE_FILENAME} "
            "(reinstall clipsearch, or pass bpe_path= pointing at that file)."
        )
    if check_hash:
        actual = _sha256(path)
        if actual != BPE_SHA256:
            raise ModelError(
                f"BPE vocabulary file {path} is damaged: sha256 {actual}, expected {BPE_SHA256}. "
                "Reinstall clipsearch to restore it."
            )
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"cannot read BPE vocabulary file {path}: {exc}. Expected a gzip text file of BPE "
            f"merges such as CLIP's {BPE_FILENAME}."
        ) from exc
    body = lines[1 : _NUM_MERGES + 1]  # line 0 is a version header
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(body, start=2):
        parts = line.split()
        if not parts:
            break  # end of the file: too few merges, reported below
        if len(parts) != 2:
            raise ModelError(
                f"BPE vocabulary file {path} line {number} is not a merge pair ({line[:40]!r}); "
                f"expected CLIP's {BPE_FILENAME}."
            )
        merges.append((parts[0], parts[1]))
    if len(merges) != _NUM_MERGES:
        raise ModelError(
            f"BPE vocabulary file {path} holds {len(merges)} merges, CLIP needs {_NUM_MERGES}; "
            f"expected CLIP's {BPE_FILENAME}."
        )
    return tuple(merges)


def _pairs(word: Sequence[str]) -> set[tuple[str, str]]:
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def _bound_work(text: str) -> str:
    """Cut huge input to what can matter; short input (the normal case) is returned unchanged."""
    if len(text) <= _LONG_INPUT:
        return text
    head = _FIRST_NONSPACE.match(text)
    if head is not None:
        text = text[: head.end()]
    if len(text) > _LONG_INPUT:
        # Mostly whitespace: ftfy works line by line, so thousands of blank lines cost seconds.
        # Runs of whitespace collapse to one space (or one newline) here, as cleaning would
        # collapse them to one space anyway.
        text = _SPACE_RUN.sub(lambda m: "\n" if "\n" in m.group() else " ", text)
    return text


def _clean(text: str) -> str:
    """ftfy, HTML unescape (twice, as the reference does), whitespace collapse, lower case."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """CLIP's BPE tokenizer. ``Tokenizer()(["a dog", "a cat"])`` -> LongTensor[2, 77].

    ``bpe_path`` defaults to the packaged vocabulary, whose sha256 is checked on loading. Another
    file is accepted if it is in the same format (a warning is logged if its hash differs).
    """

    def __init__(self, bpe_path: str | Path | None = None, cache_size: int = 65536) -> None:
        if bpe_path is None:
            path = default_bpe_path()
            merges = _load_merges(str(path), True)
        else:
            path = Path(bpe_path).expanduser()
            merges = _load_merges(str(path.resolve()), False)
        self.bpe_path = path
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.bpe_ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self.vocab_size = len(vocab)
        self._bpe_cached = functools.lru_cache(maxsize=cache_size)(self._bpe)

    # -- BPE ----------------------------------------------------------------------------------

    def _bpe(self, token: str) -> tuple[str, ...]:
        """The BPE symbols of one byte-encoded word (the last one ends with ``</w>``)."""
        if token in (SOT_TOKEN, EOT_TOKEN):
            return (token,)
        word = (*token[:-1], token[-1] + "</w>")
        if len(word) > _SHORT_WORD:
            return self._bpe_long(word)
        ranks = self.bpe_ranks
        pairs = _pairs(word)
        while pairs:
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        return word

    def _bpe_long(self, word: tuple[str, ...]) -> tuple[str, ...]:
        """The same merges in O(n log n): a heap of (rank, position) over a linked list.

        Merging the lowest-ranked pair everywhere, left to right, is the same as popping its
        occurrences from the heap in position order; stale entries are skipped when popped.
        """
        ranks = self.bpe_ranks
        symbols = list(word)
        n = len(symbols)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap: list[tuple[int, int, str, str]] = []
        for i in range(n - 1):
            r = ranks.get((symbols[i], symbols[i + 1]))
            if r is not None:
                heap.append((r, i, symbols[i], symbols[i + 1]))
        heapq.heapify(heap)
        while heap:
            # One pass per rank, as the reference loop does: every occurrence of the pair present
            # now, left to right; pairs formed by these merges wait for the next pass.
            rank = heap[0][0]
            batch = []
            while heap and heap[0][0] == rank:
                batch.append(heapq.heappop(heap))
            for _, i, left, right in batch:
                j = nxt[i]
                if not alive[i] or j >= n or symbols[i] != left or symbols[j] != right:
                    continue  # stale: one side has been merged since this entry was pushed
                symbols[i] = left + right
                alive[j] = False
                nxt[i] = nxt[j]
                if nxt[j] < n:
                    prv[nxt[j]] = i
                p = prv[i]
                if p >= 0:
                    rp = ranks.get((symbols[p], symbols[i]))
                    if rp is not None:
                        heapq.heappush(heap, (rp, p, symbols[p], symbols[i]))
                k = nxt[i]
                if k < n:
                    rk = ranks.get((symbols[i], symbols[k]))
                    if rk is not None:
                        heapq.heappush(heap, (rk, i, symbols[i], symbols[k]))
        return tuple(s for s, a in zip(symbols, alive, strict=True) if a)

    # -- public API ---------------------------------------------------------------------------

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """The BPE ids of ``text`` without start/end ids.

        With ``max_tokens``, stops once that many ids are produced (the result may be longer by
        the last word's ids; callers cut it). Text beyond its first 8192 non-space characters is
        not read: no context holds that many ids.
        """
        if not isinstance(text, str):
            raise ModelError(f"the tokenizer takes str, got {type(text).__name__}")
        text = _bound_work(text)
        ids: list[int] = []
        encoder = self.encoder
        for match in _WORD_PATTERN.finditer(_clean(text)):
            word = match.group().encode("utf-8", errors="replace")
            encoded = "".join(self.byte_encoder[b] for b in word)
            ids.extend(encoder[sym] for sym in self._bpe_cached(encoded))
            if max_tokens is not None and len(ids) >= max_tokens:
                break
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text from ids: start ids skipped, stops at the first end id, ``</w>`` becomes a space."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        parts: list[str] = []
        for raw in ids:
            i = int(raw)
            if i == self.eot_id:
                break
            if i == self.sot_id:
                continue
            if i not in self.decoder:
                raise ModelError(
                    f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            parts.append(self.decoder[i])
        data = bytearray(self.byte_decoder[c] for c in "".join(parts))
        text = data.decode("utf-8", errors="replace").replace("</w>", " ")
        return text.strip()

    def __call__(
        self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH
    ) -> torch.Tensor:
        """LongTensor[N, context_length]: start id, BPE ids, end id, zero padding.

        A text too long for the context is cut and its last position set to the end id.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ModelError(f"context_length must be at least 2, got {context_length}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text, max_tokens=context_length), self.eot_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
