"""BPE pre-tokenizers: split text into words the way llama.cpp's src/unicode.cpp does.

llama.cpp runs a list of regexes per `tokenizer.ggml.pre`; each regex splits every segment left by the
previous one (matches and the gaps between them both become segments). The common regexes have hand-written
matchers there (unicode_regex_split_custom_gpt2/_llama3/_qwen2); the rest go through std::regex on a text
where each non-ASCII code point is collapsed to its category. Both are re-done here by hand, because the
`regex` package is not allowed and Python's `re` has no \\p{L}/\\p{N}. Character classes come from
`unicodedata` (llama.cpp's tables come from the Unicode database too; versions may differ on new code points).
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable

# Character classes, as llama.cpp's unicode_cpt_flags sees them for these splitters.
NONE, LETTER, NUMBER, SPACE, OTHER = 0, 1, 2, 3, 4

# unicode_set_whitespace in llama.cpp's unicode-data.cpp (regex \s).
WHITESPACE = frozenset(map(chr, (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)))
# ASCII characters that the collapsed [\p{P}\$\+<=>\^~\|] class of the "default" pre-tokenizer accepts besides \p{P}.
_DEFAULT_PUNCT_EXTRA = frozenset("$+<=>^~|")

_class_cache: dict[str, int] = {}


def char_class(ch: str) -> int:
    """LETTER (\\p{L}), NUMBER (\\p{N}), SPACE (\\s) or OTHER; cached because text repeats characters."""
    c = _class_cache.get(ch)
    if c is None:
        if ch in WHITESPACE:
            c = SPACE
        else:
            cat = unicodedata.category(ch)[0]
            c = LETTER if cat == "L" else NUMBER if cat == "N" else OTHER
        _class_cache[ch] = c
    return c


def _lower(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


Segment = tuple[int, int]          # [start, end) into the text
Splitter = Callable[[str, list[int], int, int], list[int]]   # (text, classes, start, end) -> piece ends


def split_gpt2(text: str, cls: list[int], start: int, end: int) -> list[int]:
    """'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+ (case-sensitive)."""
    ends = []
    pos = start

    def at(i: int) -> int:
        return cls[i] if i < end else NONE

    while pos < end:
        ch = text[pos]
        if ch == "'" and pos + 1 < end:
            nxt = text[pos + 1]
            if nxt in "stmd":
                pos += 2
                ends.append(pos)
                continue
            if pos + 2 < end and nxt + text[pos + 2] in ("re", "ve", "ll"):
                pos += 3
                ends.append(pos)
                continue
        c2 = at(pos + 1) if ch == " " else cls[pos]
        if c2 in (LETTER, NUMBER, OTHER):
            pos += ch == " "
            while at(pos) == c2:
                pos += 1
            ends.append(pos)
            continue
        pos = _whitespace(text, at, pos, end, newline_runs=False)
        ends.append(pos)
    return ends


def _whitespace(text: str, at, pos: int, end: int, newline_runs: bool) -> int:
    """The tail shared by the gpt2/llama3 matchers: [\\s*[\\r\\n]+ |] \\s+(?!\\S) | \\s+ | any one char."""
    n = 0
    last_newline = 0
    while at(pos + n) == SPACE:
        if newline_runs and text[pos + n] in "\r\n":
            last_newline = pos + n + 1
        n += 1
    if last_newline:
        return last_newline
    if n > 1 and pos + n < end:
        return pos + n - 1
    if n > 0:
        return pos + n
    return pos + 1


def _make_llama3(max_digits: int) -> Splitter:
    """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,max}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|
    \\s*[\\r\\n]+|\\s+(?!\\S)|\\s+  (llama3: max 3; qwen2: max 1)."""

    def split(text: str, cls: list[int], start: int, end: int) -> list[int]:
        ends = []
        pos = start

        def at(i: int) -> int:
            return cls[i] if i < end else NONE

        while pos < end:
            ch = text[pos]
            c = cls[pos]
            if ch == "'" and pos + 1 < end:
                nxt = _lower(text[pos + 1])
                if nxt in "stmd":
                    pos += 2
                    ends.append(pos)
                    continue
                if pos + 2 < end and nxt + _lower(text[pos + 2]) in ("re", "ve", "ll"):
                    pos += 3
                    ends.append(pos)
                    continue
            if not (ch in "\r\n" or c == NUMBER) and (c == LETTER or at(pos + 1) == LETTER):
                pos += 1
                while at(pos) == LETTER:
                    pos += 1
                ends.append(pos)
                continue
            if c == NUMBER:
                run = pos
                while at(pos) == NUMBER:
                    pos += 1
                    if pos - run >= max_digits:
                        ends.append(pos)
                        run = pos
                if pos != run:
                    ends.append(pos)
                continue
            c2 = at(pos + 1) if ch == " " else c
            if c2 not in (SPACE, LETTER, NUMBER):
                pos += ch == " "
                while at(pos) == OTHER:
                    pos += 1
                while pos < end and text[pos] in "\r\n":
                    pos += 1
                ends.append(pos)
                continue
            pos = _whitespace(text, at, pos, end, newline_runs=True)
            ends.append(pos)
        return ends

    return split


def _isolate(pred: Callable[[str, int], bool], runs: bool) -> Splitter:
    """A one-class regex `[class]` (runs=False: each match one char) or `[class]+` (runs=True) through
    std::regex_iterator: matches and the gaps between them all become pieces."""

    def split(text: str, cls: list[int], start: int, end: int) -> list[int]:
        ends = []
        pos = start
        while pos < end:
            hit = pred(text[pos], cls[pos])
            pos += 1
            if hit and runs or not hit:
                while pos < end and pred(text[pos], cls[pos]) == hit:
                    pos += 1
            ends.append(pos)
        return ends

    return split


def _ascii_digit_triples(text: str, cls: list[int], start: int, end: int) -> list[int]:
    """[0-9][0-9][0-9]: leftmost non-overlapping triples of ASCII digits, gaps kept as pieces."""
    ends = []
    pos = gap = start
    while pos < end:
        if pos + 3 <= end and all("0" <= text[i] <= "9" for i in range(pos, pos + 3)):
            if pos > gap:
                ends.append(pos)
            pos += 3
            ends.append(pos)
            gap = pos
        else:
            pos += 1
    if gap < end:
        ends.append(end)
    return ends


def _is_default_punct(ch: str, c: int) -> bool:
    return ch in _DEFAULT_PUNCT_EXTRA or (c == OTHER and unicodedata.category(ch)[0] == "P")


split_llama3 = _make_llama3(3)
split_qwen2 = _make_llama3(1)
split_each_number = _isolate(lambda ch, c: c == NUMBER, runs=False)
split_number_runs = _isolate(lambda ch, c: c == NUMBER, runs=True)
split_default_punct = _isolate(_is_default_punct, runs=True)


@dataclass(frozen=True)
class PreTokenizer:
    """What a `tokenizer.ggml.pre` value means to llama.cpp's BPE tokenizer (llama-vocab.cpp)."""
    splitters: tuple[Splitter, ...]
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool = False


_GPT2 = PreTokenizer((split_gpt2,))
_DIGITS_GPT2 = PreTokenizer((split_each_number, split_gpt2))
_LLAMA3 = PreTokenizer((split_llama3,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((split_qwen2,), clean_spaces=False)

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer((split_default_punct, split_gpt2, split_number_runs, _ascii_digit_triples)),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
                    _LLAMA3),
    "dbrx": PreTokenizer((split_llama3,)),
    "smaug-bpe": PreTokenizer((split_llama3,)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2),
    "stablelm2": PreTokenizer((split_qwen2,)),
    "megrez": PreTokenizer((split_qwen2,)),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"), _GPT2),
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b"), _DIGITS_GPT2),
    **dict.fromkeys(("smollm", "command-r"), PreTokenizer((split_each_number, split_gpt2), clean_spaces=False)),
}


def pre_tokenizer(name: str | None) -> PreTokenizer | None:
    """The pre-tokenizer for `tokenizer.ggml.pre` (missing -> "default", like llama.cpp); None if unknown."""
    return PRE_TOKENIZERS.get(name or "default")


def split_words(text: str, pre: PreTokenizer) -> list[str]:
    """Run the pre-tokenizer's splitters in turn, each within the segments the previous one left."""
    cls = [char_class(ch) for ch in text]
    bounds = [len(text)] if text else []
    for splitter in pre.splitters:
        new_bounds = []
        start = 0
        for end in bounds:
            new_bounds.extend(splitter(text, cls, start, end))
            start = end
        bounds = new_bounds
    words, start = [], 0
    for end in bounds:
        words.append(text[start:end])
        start = end
    return words


def _byte_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = [""] * 256
    for b in keep:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _byte_to_unicode()
UNICODE_TO_BYTE = {ch: b for b, ch in enumerate(BYTE_TO_UNICODE)}
_BYTE_ENCODE_TABLE = {b: ch for b, ch in enumerate(BYTE_TO_UNICODE)}


def byte_encode(word: str) -> str:
    """A word's UTF-8 bytes spelled in GPT-2's byte-level alphabet."""
    return word.encode("utf-8", "replace").decode("latin-1").translate(_BYTE_ENCODE_TABLE)
