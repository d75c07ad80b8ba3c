"""CLIP's byte-level BPE tokenizer.

Produces the same ids as OpenAI CLIP's ``clip.tokenize(texts, context_length, truncate=True)``: text is repaired with
ftfy, HTML-unescaped twice, whitespace-collapsed and lower-cased, split by CLIP's regular expression, byte-encoded and
merged with the 49,152-entry BPE table shipped beside this file (``bpe_simple_vocab_16e6.txt.gz``). Each row is
``<|startoftext|> tokens <|endoftext|>`` padded with id 0; a text longer than the context is cut and its last id is
replaced by ``<|endoftext|>``, so the end token is always present and the position of the largest id marks it.
"""
from __future__ import annotations

import gzip
import heapq
import html
import os
from functools import lru_cache
from typing import Optional, Sequence

import ftfy
import regex
import torch

VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
# 256 byte symbols + their 256 word-final forms + 48,894 merges + 2 special tokens.
N_MERGES = 49152 - 256 - 2


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, so BPE never sees whitespace or control bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clean_text(text: str) -> str:
    """Repair mojibake, unescape HTML (twice, as OpenAI does), collapse whitespace and lower-case."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """Byte-level BPE over CLIP's vocabulary (49,408 ids)."""

    def __init__(self, bpe_path: str = VOCAB_PATH):
        self.byte_encoder = bytes_to_unicode()
        with gzip.open(bpe_path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
        self.pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self.vocab_size = len(self.encoder)

    def bpe(self, token: str) -> str:
        """Merge the symbols of one pre-token by rank until no ranked pair is left; symbols joined by spaces.

        The same result as OpenAI's loop (each round merges every occurrence of the best-ranked pair, left to right),
        in O(n log n) instead of O(n^2) per pre-token: a linked list of symbols and a heap of (rank, position) of
        adjacent pairs, whose entries are checked against the current symbols when popped. A 100,000-letter word
        takes about a second instead of minutes.
        """
        if token in self.cache:
            return self.cache[token]
        ranks = self.bpe_ranks
        symbols: list = list(token[:-1]) + [token[-1] + "</w>"]
        n = len(symbols)
        nxt, prv = list(range(1, n)) + [-1], list(range(-1, n - 1))
        heap = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank = heap[0][0]
            positions = []
            while heap and heap[0][0] == rank:
                positions.append(heapq.heappop(heap)[1])  # in position order: (rank, position) tuples
            merged = []
            for i in positions:
                j = nxt[i]
                if symbols[i] is None or j < 0 or ranks.get((symbols[i], symbols[j])) != rank:
                    continue  # stale: an earlier merge of this round consumed or changed the pair
                symbols[i] += symbols[j]
                symbols[j] = None
                nxt[i] = nxt[j]
                if nxt[i] >= 0:
                    prv[nxt[i]] = i
                merged.append(i)
            # New pairs compete only from the next round, as in the reference loop.
            for i in merged:
                for a in (prv[i], i):
                    if a >= 0 and nxt[a] >= 0:
                        r = ranks.get((symbols[a], symbols[nxt[a]]))
                        if r is not None:
                            heapq.heappush(heap, (r, a))
        out = " ".join(s for s in symbols if s is not None)
        self.cache[token] = out
        return out

    def encode(self, text: str, max_tokens: Optional[int] = None) -> list[int]:
        """BPE ids of ``text`` without start and end tokens; with ``max_tokens``, only the first ones.

        Pre-tokens are encoded independently, so stopping after ``max_tokens`` ids gives exactly the prefix of the
        whole encoding while the work stays bounded by what is kept (plus cleaning the text, which is linear).
        """
        ids: list[int] = []
        for match in self.pattern.finditer(clean_text(text)):
            symbols = "".join(self.byte_encoder[b] for b in match.group().encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(symbols).split(" "))
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids (with or without start/end tokens and padding), up to the cleaning; for logs and pictures."""
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        byte_decoder[" "] = ord(" ")  # word ends
        ids = [int(i) for i in ids]
        if self.eot_id in ids:
            ids = ids[:ids.index(self.eot_id)]  # padding after the end token is not text
        text = "".join(self.decoder[i] for i in ids if i != self.sot_id)
        raw = bytearray(byte_decoder[c] for c in text.replace("</w>", " "))
        return raw.decode("utf-8", errors="replace").strip()


@lru_cache()
def get_tokenizer() -> SimpleTokenizer:
    """The process-wide tokenizer (building the merge table takes about half a second)."""
    return SimpleTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> torch.LongTensor:
    """Tokenize captions exactly as OpenAI CLIP's ``tokenize(..., truncate=True)``.

    Args:
        texts: one caption or a list of captions.
        context_length: ids per row (``max_words`` in the training scripts); at least 2.
    Returns:
        LongTensor [N, context_length]: start id, BPE ids, end id, zeros.
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 (start and end token), got {context_length}")
    tok = get_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        # A longer text is cut to its first context_length - 2 ids: OpenAI cuts to context_length ids and puts the
        # end token last, which is the same row.
        ids = [tok.sot_id] + tok.encode(text, context_length - 2) + [tok.eot_id]
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def text_mask(ids: torch.Tensor) -> torch.Tensor:
    """Mask [N, L] of real positions (start token to end token inclusive).

    Id 0 is a real token ("!"), so padding is found from the end token, which has the largest id in every row.
    """
    eot = ids.argmax(dim=-1, keepdim=True)                                   # [N, 1]
    return torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0) <= eot  # [N, L]
