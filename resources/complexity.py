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
_LABEL_VALUE = re.compile(r"^[^:\n]{2,40}:\s*\S|\d[.,]\d{2}\s*$")
_BROKEN = re.compile(r"[A-Za-z][,;:`~|^][A-Za-z]")  # punctuation inside a word: "Tr:anslati,on"
_ODD = re.compile(r"[|~^`]|[^\w\s.,:;()\-/#@&%$€£¥'\"+*=]")
_ID_LIKE = re.compile(r"^[A-Z]{1,5}\d{2,}|^\d+[A-Z]{1,3}$")

WEIGHTS = {"length": 0.3, "noise": 0.45, "unstructured": 0.15, "non_latin": 0.1}


class ComplexityEstimate(BaseModel):
    score: float
    signals: dict[str, float]

    def describe(self) -> str:
        top = sorted(self.signals.items(), key=lambda kv: -kv[1] * WEIGHTS.get(kv[0], 0))[:2]
        return ", ".join(f"{name} {value:.2f}" for name, value in top)


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about four characters a token for Latin text)."""
    return max(1, math.ceil(len(text) / 4))


def _length_signal(tokens: int) -> float:
    # 150 tokens (a short receipt) → 0; 3,000 tokens (a long invoice with terms) → 1.
    return min(1.0, max(0.0, math.log(tokens / 150) / math.log(20)))


def _noise_signal(words: list[str]) -> float:
    """Share of words that look like OCR damage: letters and digits mixed inside a word, or odd symbols."""
    if not words:
        return 0.0
    suspicious = 0
    for word in words:
        core = word.strip(".,:;()[]{}'\"")
        if len(core) < 2 or _ID_LIKE.match(core) or _NUMBERISH.fullmatch(core):
            continue
        if _MIXED.match(core) or _BROKEN.search(core) or _ODD.search(core):
            suspicious += 1
    return min(1.0, suspicious / len(words) * 8)


def _unstructured_signal(lines: list[str]) -> float:
    lines = [line for line in lines if line.strip()]
    if not lines:
        return 1.0
    anchored = sum(1 for line in lines if _LABEL_VALUE.search(line.strip()))
    return max(0.0, 1.0 - 2.5 * anchored / len(lines))


def _non_latin_signal(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if ord(c) > 0x24F) / len(letters)


def estimate_complexity(text: str, declared: "float | None" = None) -> ComplexityEstimate:
    """Score an item; a task may declare a floor (``declared``) for items it knows are hard."""
    words = _WORD.findall(text)
    signals = {
        "length": _length_signal(estimate_tokens(text)),
        "noise": _noise_signal(words),
        "unstructured": _unstructured_signal(text.splitlines()),
        "non_latin": _non_latin_signal(text),
    }
    score = sum(WEIGHTS[name] * value for name, value in signals.items())
    if declared is not None:
        signals["declared"] = float(declared)
        score = max(score, float(declared))
    return ComplexityEstimate(score=round(min(1.0, max(0.0, score)), 3), signals={k: round(v, 3) for k, v in signals.items()})
