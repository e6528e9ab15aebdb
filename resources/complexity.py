"""How hard an item looks, from the text alone, before any model sees it.

The score in [0, 1] combines signals that make extraction harder for a cheap model:
length (more to read, more distractors), OCR noise (letters and digits confused, broken
tokens), weak structure (few 'label: value' or amount lines to anchor on) and non-Latin
script. Each signal is kept, so a routing decision can say *why* an item needed a
stronger model. The weights are priors; learned routing (fitted to outcomes) replaces them.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel

_WORD = re.compile(r"\S+")
_MIXED = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z\d]+$")
_NUMBERISH = re.compile(r"\d[\d.,]*\d")
_BROKEN = re.compile(r"[A-Za-z][,;:`~|^][A-Za-z]")  # punctuation inside a word: "Tr:anslati,on"
_ODD = re.compile(r"[|~^`]|[^\w\s.,:;()\-/#@&%$€£¥'\"+*=]")
_ID_LIKE = re.compile(r"^[A-Z]{1,5}\d{2,}|^\d+[A-Z]{1,3}$")
# Whole-text scans (one regex call, not one per line) keep a decision in tens of microseconds.
_ANCHORED_LINE = re.compile(r"^[ \t]*(?:[^:\n]{2,40}:[ \t]*\S|.*\d[.,]\d{2}[ \t]*$)", re.MULTILINE)
_NON_EMPTY_LINE = re.compile(r"^[ \t]*\S", re.MULTILINE)
_LETTER = re.compile(r"[^\W\d_]")
_NON_LATIN_LETTER = re.compile(r"[^\W\d_\u0000-\u024F]")

WEIGHTS = {"length": 0.3, "noise": 0.45, "unstructured": 0.15, "non_latin": 0.1}


class ComplexityEstimate(BaseModel):
    score: float
    signals: dict[str, float]
    summary: str = ""  # the two strongest signals, said once at estimation: every decision quotes it

    def describe(self) -> str:
        if self.summary:
            return self.summary
        top = sorted(self.signals.items(), key=lambda kv: -kv[1] * WEIGHTS.get(kv[0], 0))[:2]
        return ", ".join(f"{name} {value:.2f}" for name, value in top)


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about four characters a token for Latin text)."""
    return max(1, math.ceil(len(text) / 4))


_DIGIT = re.compile(r"\d")  # any script's digits; ASCII text counts its ten with str.count
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def context_tokens(text: str) -> int:
    """A cautious token count for the context-window check, never below ``estimate_tokens``.

    Too low there means a call the model refuses (HTTP 400), too high at worst a model with a
    larger window. Invoices are dense: Gemma 3's tokenizer (SentencePiece, one token a digit)
    takes 1.4-2 characters a token on them, not four. So: a token a digit, one and a half a
    Chinese, Japanese or Korean character, and one every 1.8 other characters. Measured
    against Gemma's own counts (``tests/test_routing.py``) on number tables, receipts, OCR
    text, German, Chinese, Japanese and Korean invoices, it is 0-10 % above; English prose it
    overcounts about twice.
    """
    digits = sum(map(text.count, "0123456789")) if text.isascii() else len(_DIGIT.findall(text))
    cjk = 0 if text.isascii() else len(_CJK.findall(text))
    return max(estimate_tokens(text), digits + math.ceil(1.5 * cjk + (len(text) - digits - cjk) / 1.8))


def context_tokens_at_most(text: str) -> int:
    """A bound on ``context_tokens`` without counting (a token a character, 1.5 with CJK ones): a text
    whose bound fits a window is not counted at all, which keeps routing decisions in microseconds."""
    return max(1, len(text) if text.isascii() else -(-3 * len(text) // 2))


def _length_signal(tokens: int) -> float:
    # 150 tokens (a short receipt) → 0; 3,000 tokens (a long invoice with terms) → 1.
    return min(1.0, max(0.0, math.log(tokens / 150) / math.log(20)))


def _noise_signal(text: str, word_count: int) -> float:
    """Share of words that look like OCR damage: letters and digits mixed inside a word, or odd symbols."""
    if not word_count:
        return 0.0
    suspicious = 0
    for word in text.split():
        if word.isalpha() or word.isdigit():  # letters only or digits only: never OCR damage
            continue
        core = word.strip(".,:;()[]{}'\"")
        if len(core) < 2 or core.isalpha() or _ID_LIKE.match(core) or _NUMBERISH.fullmatch(core):
            continue
        if _MIXED.match(core) or _BROKEN.search(core) or _ODD.search(core):
            suspicious += 1
    return min(1.0, suspicious / word_count * 8)


def _unstructured_signal(text: str) -> float:
    """1 minus (2.5 ×) the share of non-empty lines that anchor a value ('Label: value' or an amount)."""
    lines = len(_NON_EMPTY_LINE.findall(text))
    if not lines:
        return 1.0
    anchored = len(_ANCHORED_LINE.findall(text))
    return max(0.0, 1.0 - 2.5 * anchored / lines)


def _non_latin_signal(text: str) -> float:
    if text.isascii() or not _NON_LATIN_LETTER.search(text):
        return 0.0
    letters = len(_LETTER.findall(text))
    return len(_NON_LATIN_LETTER.findall(text)) / letters if letters else 0.0


def estimate_complexity(text: str, declared: "float | None" = None) -> ComplexityEstimate:
    """Score an item; a task may declare a floor (``declared``) for items it knows are hard."""
    signals = {
        "length": _length_signal(estimate_tokens(text)),
        "noise": _noise_signal(text, len(text.split())),
        "unstructured": _unstructured_signal(text),
        "non_latin": _non_latin_signal(text),
    }
    score = sum(WEIGHTS[name] * value for name, value in signals.items())
    if declared is not None:
        signals["declared"] = float(declared)
        score = max(score, float(declared))
    estimate = ComplexityEstimate(score=round(min(1.0, max(0.0, score)), 3), signals={k: round(v, 3) for k, v in signals.items()})
    estimate.summary = estimate.describe()
    return estimate
