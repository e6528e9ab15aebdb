"""The unit of work of every AI asset: one document with an id, its text and its classification."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, Field, field_validator

from resources.classification import DataClassification


class Document(BaseModel):
    id: str
    text: str
    classification: DataClassification = DataClassification.INTERNAL
    truth: Optional[dict[str, Any]] = Field(None, description="Ground truth, for generated documents only; never sent to a model.")
    input_error: Optional[str] = Field(None, description=(
        "Why this input line could not be read as a document (it is then this item's error, not the batch's)."))

    @field_validator("id", "text")
    @classmethod
    def _storable(cls, value: str) -> str:
        """Lone surrogates ("\\ud800") and control characters (NUL) out of ids and text however the document was
        made: no model, UTF-8 file or trace store takes them (one such id once lost its item's ledger row and
        the batch's spans)."""
        return value if value.isascii() and value.isprintable() else clean_text(value)

    def checked(self) -> "Document":
        """This document, or a copy whose ``input_error`` says it has no text: what fails before any route."""
        if self.input_error is None and not self.text.strip():
            return self.model_copy(update={"input_error": "empty document: no text to extract from"})
        return self


class DocumentInputError(ValueError):
    """A user's document file cannot be read as documents; the message names the line."""


def _readable_file(path: "str | Path") -> Path:
    """The path, or the ``DocumentInputError`` a user can act on. Files are then read as ``utf-8-sig``:
    a byte-order mark (Excel and Windows tools write one) is not part of the first row."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DocumentInputError(f"input {path} is a directory, not a JSONL file")
    if not path.is_file():
        raise DocumentInputError(f"input file {path} does not exist")
    return path


def jsonl_rows(path: "str | Path") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; a line that is not a JSON object is a
    ``DocumentInputError`` naming the file and line. Non-UTF-8 bytes are replaced, not fatal."""
    path = _readable_file(path)
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentInputError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DocumentInputError(f"{path}:{number}: not a JSON object")
            yield number, row


# C0 control characters other than tab, newline and carriage return (NUL from C strings, form
# feeds from PDF exports): noise to every model, and no column downstream should hold them.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_documents_jsonl(path: "str | Path", classification: DataClassification) -> list[Document]:
    """Read ``{"id", "text"}`` objects, one a line (other keys ignored; blank lines skipped).

    A bad line (not JSON, no string ``text``, an id that is not a non-empty string or an integer,
    a repeated ``id``) becomes a document carrying ``input_error``, named by its line, so one
    broken row fails its item and the rest of the batch runs; the ids made up for such lines
    (``line-7``, ``a#line-4``) never collide with an id the file declares. Bytes that are not
    UTF-8 are replaced rather than fatal: an OCR export with one bad byte should still be
    processed, and the replacement character is visible downstream; so are lone surrogate
    escapes (``"\\ud800"``), which no UTF-8 file, hash or model can carry. Control characters
    (NUL, form feed, ...) are removed.
    Raises ``DocumentInputError`` when the file is missing, is UTF-16 or one JSON array, or holds
    no readable document at all.
    """
    path = _readable_file(path)
    _refuse_other_formats(path)
    parsed: list[tuple[int, str, Optional[dict], Optional[str]]] = []  # line, where, row, why it is unreadable
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                parsed.append((number, where, None, f"{where}: not a JSON object ({exc.msg})"))
                continue
            if not isinstance(row, dict):
                parsed.append((number, where, None, f"{where}: not a JSON object"))
            elif "id" not in row or not isinstance(row.get("text"), str):
                parsed.append((number, where, row, f'{where}: expected an object with "id" and a string "text"'))
            elif _document_id(row["id"]) is None:
                parsed.append((number, where, None, f"{where}: the id must be a non-empty string or an integer, not {row['id']!r:.60}"))
            else:
                parsed.append((number, where, row, None))
    declared = {_document_id(row["id"]) for _, _, row, _ in parsed if row is not None and "id" in row} - {None}
    given: set[str] = set()

    def unused(base: str) -> str:
        """A made-up id (``line-7``, ``a#line-4``) that no line declares and none was given yet."""
        candidate, n = base, 2
        while candidate in given or candidate in declared:
            candidate, n = f"{base}~{n}", n + 1
        given.add(candidate)
        return candidate

    documents: list[Document] = []
    for number, where, row, why in parsed:
        doc_id = _document_id(row["id"]) if row is not None and "id" in row else None
        if why is None and doc_id in given:
            why = f"{where}: duplicate id {doc_id!r}"
        if why is not None:
            if doc_id is not None and doc_id not in given:
                given.add(doc_id)  # its first line: the declared id, failed
                documents.append(_unreadable(doc_id, classification, why))
            else:
                documents.append(_unreadable(unused(f"{doc_id}#line-{number}" if doc_id else f"line-{number}"), classification, why))
            continue
        given.add(doc_id)
        documents.append(Document(id=doc_id, text=row["text"], classification=classification))
    if not any(d.input_error is None and d.text.strip() for d in documents):
        first = next((d.input_error or d.checked().input_error for d in documents), None)
        raise DocumentInputError(f"{path} holds no readable document" + (f" (first problem: {first})" if first else ""))
    return documents


LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without C0 control characters (tab and line breaks kept) and with each lone surrogate as U+FFFD."""
    return LONE_SURROGATE.sub("\ufffd", CONTROL_CHARACTERS.sub("", text))


def _document_id(value: Any) -> Optional[str]:
    """An id as text: a non-empty string (surrogates replaced) or an integer; None for anything else
    (null, booleans, floats, lists: ``str()`` would make "None", "True" or a Python repr of them)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return LONE_SURROGATE.sub("\ufffd", value)
    return None


def _refuse_other_formats(path: Path) -> None:
    """A UTF-16 file or a JSON array is not JSONL: say what it is, not "line 1 is not a JSON object"."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 4 and (head[1::2].count(0) > len(head) // 4)):
        raise DocumentInputError(f"{path} is UTF-16 text: save it as UTF-8 (one JSON object a line)")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise DocumentInputError(f"{path} holds a JSON array: expected JSONL, one JSON object a line")


def _unreadable(doc_id: str, classification: DataClassification, why: str) -> Document:
    return Document(id=doc_id, text="", classification=classification, input_error=why)
