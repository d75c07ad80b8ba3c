"""Tokenizer parity with open_clip's implementation of OpenAI's CLIP tokenizer."""
import random
import time

import open_clip
import pytest
import torch

from modules.model.tokenizer import get_tokenizer, text_mask, tokenize

BASES = [
    "a man is playing a guitar on stage",
    "A Woman Slicing ONIONS in the kitchen",
    "kids play soccer; the ball goes out!",
    "someone explains how to fix a bike's chain...",
    "the 2 cats and 13 dogs were chasing 1,000 balls in 2019",
    "crème brûlée is served at a café in Zürich — naïve façade",
    "日本語のテキストと中文字符混在",
    "emoji time 😀🎉👍🏽 and 🐶🐱",
    "html &amp; entities &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &amp;amp;",
    "mojibake: cafÃ© and â€œquotesâ€\x9d",
    "tabs\tand\nnewlines\r\n and   runs     of   spaces",
    "we're they'll I'd you've she's it's don't",
    "URLs like https://example.com/a?b=c&d=e and e-mail me@x.org",
    "math: 3.14 * (2 + 5) = 21.98; 50% off!!!",
    "Ελληνικά, русский текст, and العربية",
    "",
    "   ",
    "<|endoftext|> inside a caption",
]


def _captions(n: int = 240) -> list[str]:
    rng = random.Random(0)
    out = list(BASES)
    while len(out) < n:
        a, b = rng.sample(BASES, 2)
        text = f"{a} {b}"
        if rng.random() < 0.3:
            text = text.upper() if rng.random() < 0.5 else text.title()
        if rng.random() < 0.3:
            text = "  " + text.replace(" ", "   ") + "\t"
        if rng.random() < 0.2:
            text = " ".join([text] * rng.randint(3, 8))  # longer than any context
        out.append(text)
    return out


@pytest.mark.parametrize("context_length", [77, 32, 8])
def test_same_ids_as_open_clip(context_length):
    reference = open_clip.get_tokenizer("ViT-B-32-quickgelu")
    captions = _captions()
    # open_clip names its special tokens differently, so a literal "<|endoftext|>" is text there, special here and in
    # OpenAI's tokenizer; compare that caption separately below.
    plain = [c for c in captions if "<|" not in c]
    ours = tokenize(plain, context_length)
    theirs = reference(plain, context_length=context_length)
    same = (ours == theirs).all(dim=1)
    assert same.all(), [plain[i] for i in torch.nonzero(~same).flatten().tolist()[:3]]
    assert len(plain) >= 200


def test_layout_and_truncation():
    tok = get_tokenizer()
    ids = tokenize(["hello world", "word " * 100], 10)
    assert ids.shape == (2, 10)
    assert ids[0, 0] == tok.sot_id and ids[0, 3] == tok.eot_id and (ids[0, 4:] == 0).all()
    assert ids[1, 0] == tok.sot_id and ids[1, -1] == tok.eot_id and (ids[1, 1:-1] != tok.eot_id).all()
    assert ids.argmax(-1).tolist() == [3, 9]
    # The special token written in a caption is the end token, as in OpenAI's tokenizer.
    assert tokenize("<|endoftext|>", 5)[0].tolist() == [tok.sot_id, tok.eot_id, tok.eot_id, 0, 0]


def test_mask_marks_start_to_end_even_for_id_zero():
    ids = tokenize(["!~~", "a b c"], 8)
    assert ids[0, 1] == 0  # "!" inside a word is id 0, indistinguishable from padding by value
    assert text_mask(ids).tolist() == [[True, True, True, True, False, False, False, False],
                                       [True, True, True, True, True, False, False, False]]


def test_decode_round_trip():
    tok = get_tokenizer()
    # Punctuation is its own word, so it comes back space-separated, as from OpenAI's decoder.
    assert tok.decode(tok.encode("A dog runs on the beach!")) == "a dog runs on the beach !"
    assert tok.decode(tokenize("Crème brûlée 😀")[0].tolist()) == "crème brûlée 😀"


def test_context_too_short():
    with pytest.raises(ValueError, match="at least 2"):
        tokenize("a", 1)


def _random_words(n: int, seed: int = 0) -> list[str]:
    """Single pre-tokens up to 300 characters, from alphabets that make long merge chains."""
    rng = random.Random(seed)
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "aeinrst", "ab", "thequickbrownfox", "ßàéîõüçñ日本語", "!?.,;:'-"]
    return ["".join(rng.choice(alpha) for _ in range(rng.choice([1, 2, 5, 13, 40, 120, 300])))
            for alpha in (rng.choice(alphabets) for _ in range(n))]


def test_bpe_merges_as_open_clip_on_long_words():
    """The heap-based merge loop against open_clip's (OpenAI's) quadratic loop, on whole pre-tokens."""
    from open_clip.tokenizer import SimpleTokenizer

    reference, ours = SimpleTokenizer(), get_tokenizer()
    vocab_pieces = [t.replace("</w>", "") for t in list(ours.encoder)[512:49000:7]]
    rng = random.Random(1)
    words = _random_words(400) + ["".join(rng.sample(vocab_pieces, 4)) for _ in range(300)]
    for word in words:
        symbols = "".join(ours.byte_encoder[b] for b in word.encode("utf-8"))
        assert ours.bpe(symbols) == reference.bpe(symbols), word


def test_encoding_stops_after_the_kept_tokens():
    tok = get_tokenizer()
    text = " ".join(_random_words(60, seed=2))
    whole = tok.encode(text)
    for k in (1, 5, 30, len(whole), len(whole) + 3):
        assert tok.encode(text, max_tokens=k) == whole[:k]


@pytest.mark.parametrize("text", ["x" * 100_000, "".join(random.Random(3).choice("abcdefghij") for _ in range(100_000)),
                                  "a red circle moves left " * 5000])
def test_100000_character_caption_is_bounded(text):
    """A single 100,000-letter word used to take minutes (quadratic merges); many words used to be encoded whole."""
    start = time.perf_counter()
    ids = tokenize(text, 77)
    assert time.perf_counter() - start < 10
    assert ids.shape == (1, 77) and ids[0, -1] == get_tokenizer().eot_id
