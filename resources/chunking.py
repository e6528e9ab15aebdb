"""Split a document that is too long for a model into chunks that fit, on line and paragraph boundaries.

Why it exists: a model's context window holds the instructions, the output schema, the
document and the answer. A multi-page invoice or a long contract can exceed the smallest
window among the models a router may pick, and a router that silently drops those models
or a provider that truncates the text would lose fields without saying so. A template
therefore sizes chunks *before* routing (``token_budget``: the smallest context among the
usable models, minus what every call reserves) and splits with ``split_text``:

* cuts fall on line boundaries, preferring a blank line (a paragraph end) when one lies in
  the second half of the chunk, so a table row or a clause is not cut in two;
* the document's first lines (its header: vendor and invoice number, parties of a
  contract) are repeated at the top of every chunk, so each part can be read on its own;
* a single line longer than the budget is split hard, at a space where there is one;
* chunk ids say where a part sits: ``INV-7#2/3`` is the second of three.

Everything here is pure (text in, chunks out) and knows nothing about invoices; token
counts use ``resources.complexity.estimate_tokens`` unless a counter is passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from resources.complexity import estimate_tokens

TokenCounter = Callable[[str], int]
MIN_CHUNK_TOKENS = 64  # below this a chunk holds a header and a line or two: say so instead of splitting
HEADER_SHARE = 0.25  # the repeated header may take at most this share of a chunk


class ChunkingError(ValueError):
    """A document cannot be split to fit: the message names the limit (model, window, tokens, chunks)."""


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens of document text one call may carry, and which limit decided it."""

    tokens: int
    model: str  # the usable model with the smallest context window
    context_window: int  # that model's window
    reserved_tokens: int  # instructions, output schema and output, reserved in every call
    capped: bool = False  # True when a template's max_chunk_tokens, not the window, set ``tokens``

    def describe(self) -> str:
        """'≤ 1596 tokens a chunk (local-gemma3-270m's 4096-token context minus 2500 reserved)'."""
        room = f"{self.model}'s {self.context_window}-token context minus {self.reserved_tokens} reserved"
        return f"≤ {self.tokens} tokens a chunk (" + (f"max_chunk_tokens, below {room}" if self.capped else room) + ")"


def token_budget(context_windows: Mapping[str, int], reserved_tokens: int, cap: Optional[int] = None,
                 minimum: int = MIN_CHUNK_TOKENS) -> TokenBudget:
    """The chunk size every model in ``context_windows`` (model id → tokens) can take.

    ``reserved_tokens`` is what each call spends besides the document (instructions, schema,
    the answer's ``max_output_tokens``); ``cap`` a template's own ceiling (smaller chunks mean
    shorter answers). Raises ``ChunkingError`` naming the model and its window when no usable
    room is left, or when there is no model to size for.
    """
    if not context_windows:
        raise ChunkingError("no model may serve this document, so there is no context window to size chunks for")
    model, window = min(context_windows.items(), key=lambda kv: (kv[1], kv[0]))
    room = window - reserved_tokens
    if room < minimum:
        raise ChunkingError(
            f"{model}'s context window of {window} tokens leaves {room} tokens for the document after {reserved_tokens} "
            f"reserved for instructions, schema and output (at least {minimum} needed): use a model with a larger "
            f"context or fewer output tokens")
    if cap is not None and cap < minimum:
        raise ChunkingError(f"max_chunk_tokens {cap} is below the minimum of {minimum} tokens a chunk")
    if cap is not None and cap < room:
        return TokenBudget(cap, model, window, reserved_tokens, capped=True)
    return TokenBudget(room, model, window, reserved_tokens)


def chunk_id(document_id: str, index: int, count: int) -> str:
    """``docid#index/count``, 1-based: where a part sits, readable in a ledger row or a trace."""
    return f"{document_id}#{index}/{count}"


@dataclass(frozen=True)
class Chunk:
    """One part of a document. ``text`` starts with the document's header (``header_chars`` long) when split."""

    id: str
    document_id: str
    index: int  # 1-based
    count: int
    text: str
    header_chars: int = 0  # 0 when the document was not split
    tokens: int = 0

    @property
    def header(self) -> str:
        return self.text[: self.header_chars]

    @property
    def body(self) -> str:
        """The part's own text: for chunk 1 everything after the header, for later chunks what is new in them."""
        return self.text[self.header_chars:]

    @property
    def repeats_header(self) -> bool:
        """True for chunks 2..n of a split document: their header is a copy of the document's first lines."""
        return self.index > 1 and self.header_chars > 0


def split_text(document_id: str, text: str, budget_tokens: int, *, header_lines: int = 6,
               max_chunks: Optional[int] = None, count_tokens: TokenCounter = estimate_tokens) -> list[Chunk]:
    """``text`` as chunks of at most ``budget_tokens`` tokens each (one chunk when it fits).

    The header is the first ``header_lines`` non-blank lines, shortened to at most a quarter of
    the budget. The header plus every chunk's ``body`` is the text again, except that a part
    holding nothing but blank lines is dropped (a call on it would read nothing). ``max_chunks`` bounds the split: a document that needs more raises
    ``ChunkingError`` naming both numbers, instead of fanning out into hundreds of calls.
    """
    if budget_tokens < 1:
        raise ChunkingError(f"budget_tokens must be positive, got {budget_tokens}")
    whole = count_tokens(text)
    if whole <= budget_tokens:
        return [Chunk(chunk_id(document_id, 1, 1), document_id, 1, 1, text, 0, whole)]
    lines = text.splitlines(keepends=True)
    header, rest = _header(lines, header_lines, int(budget_tokens * HEADER_SHARE), count_tokens)
    header_text = "".join(header)
    room = budget_tokens - (count_tokens(header_text) if header_text else 0)
    bodies = _pack(_fit_lines(rest, room, count_tokens), room, count_tokens)
    if max_chunks is not None and len(bodies) > max_chunks:
        raise ChunkingError(
            f"document {document_id} needs {len(bodies)} chunks of at most {budget_tokens} tokens "
            f"(~{whole} tokens in all), more than max_chunks {max_chunks}")
    count = len(bodies)
    chunks = []
    for index, body in enumerate(bodies, start=1):
        chunk_text = header_text + "".join(body)
        chunks.append(Chunk(chunk_id(document_id, index, count), document_id, index, count, chunk_text,
                            len(header_text), count_tokens(chunk_text)))
    return chunks


def _header(lines: list[str], wanted: int, limit: int, count_tokens: TokenCounter) -> tuple[list[str], list[str]]:
    """The first ``wanted`` non-blank lines (and the blank lines among them), trimmed to ``limit`` tokens."""
    end = seen = 0
    while end < len(lines) and seen < wanted:
        seen += bool(lines[end].strip())
        end += 1
    header = lines[:end]
    while header and count_tokens("".join(header)) > limit:
        header.pop()
    return header, lines[len(header):]


def _fit_lines(lines: list[str], room: int, count_tokens: TokenCounter) -> list[str]:
    """The lines, with any line longer than ``room`` tokens cut into pieces that fit."""
    fitted: list[str] = []
    for line in lines:
        while count_tokens(line) > room:
            cut = _longest_prefix(line, room, count_tokens)
            fitted.append(line[:cut])
            line = line[cut:]
        if line:
            fitted.append(line)
    return fitted


def _longest_prefix(line: str, room: int, count_tokens: TokenCounter) -> int:
    """Where to cut ``line`` so the first part fits ``room``: at the last space in it, or hard."""
    low, high = 1, len(line)
    while low < high:  # the longest prefix that fits (token counts only grow with length)
        middle = (low + high + 1) // 2
        if count_tokens(line[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    space = max(line.rfind(" ", 0, low), line.rfind("\t", 0, low))
    return space + 1 if space >= low // 2 else low


def _pack(lines: list[str], room: int, count_tokens: TokenCounter) -> list[list[str]]:
    """Greedy: fill a chunk line by line; when the next line does not fit, cut at the last blank line in the
    second half of the chunk if there is one (the rest starts the next chunk), else right there."""
    chunks: list[list[str]] = []
    current: list[str] = []
    sizes: list[int] = []
    for line in lines:
        size = count_tokens(line)
        if current and sum(sizes) + size > room:
            cut = _paragraph_cut(current, sizes, room)
            chunks.append(current[:cut])
            current, sizes = current[cut:], sizes[cut:]
        current.append(line)
        sizes.append(size)
    if current:
        chunks.append(current)
    return [chunk for chunk in chunks if any(line.strip() for line in chunk)] or chunks[:1]


def _paragraph_cut(lines: list[str], sizes: list[int], room: int) -> int:
    filled = 0
    cut = len(lines)
    for index, (line, size) in enumerate(zip(lines, sizes)):
        filled += size
        if not line.strip() and filled >= room / 2 and index + 1 < len(lines):
            cut = index + 1
    return cut


_SPACES = re.compile(r"\s+")


def normalized(text: str) -> str:
    """Case- and whitespace-insensitive form, for matching a value against a chunk's text."""
    return _SPACES.sub(" ", text).strip().casefold()


def only_in_header(chunk: Chunk, value: str) -> bool:
    """True when ``value`` can only have been read from the header a later chunk repeats.

    A model reading chunk 2 sees the document's first lines again and may report what is in
    them (a line of the header read as a line item, a clause heading) a second time; merging
    drops such values from every chunk but the first. A value that also occurs in the chunk's
    own text is kept: it may be a real repeat in the document.
    """
    if not chunk.repeats_header or not value.strip():
        return False
    needle = normalized(value)
    return needle in normalized(chunk.header) and needle not in normalized(chunk.body)
