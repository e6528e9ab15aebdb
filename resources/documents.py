"""The unit of work of every AI asset: one document with an id, its text and its classification."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, Field

from resources.classification import DataClassification


class Document(BaseModel):
    id: str
    text: str
    classification: DataClassification = DataClassification.INTERNAL
    truth: Optional[dict[str, Any]] = Field(None, description="Ground truth, for generated documents only; never sent to a model.")
    input_error: Optional[str] = Field(None, description=(
        "Why this input line could not be read as a document (it is then this item's error, not the batch's)."))

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

    A bad line (not JSON, no string ``text``, a repeated ``id``) becomes a document carrying
    ``input_error``, named by its line, so one broken row fails its item and the rest of the
    batch runs. Bytes that are not UTF-8 are replaced rather than fatal: an OCR export with one
    bad byte should still be processed, and the replacement character is visible downstream.
    Control characters (NUL, form feed, ...) are removed.
    Raises ``DocumentInputError`` when the file is missing or holds no readable document at all.
    """
    path = _readable_file(path)
    documents: list[Document] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                documents.append(_unreadable(f"line-{number}", classification, f"{where}: not a JSON object ({exc.msg})"))
                continue
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("text"), str):
                doc_id = str(row["id"]) if isinstance(row, dict) and "id" in row else f"line-{number}"
                what = "not a JSON object" if not isinstance(row, dict) else 'expected an object with "id" and a string "text"'
                documents.append(_unreadable(f"{doc_id}#line-{number}" if doc_id in seen else doc_id, classification,
                                             f"{where}: {what}"))
                seen.add(doc_id)
                continue
            doc_id = str(row["id"])
            if doc_id in seen:
                documents.append(_unreadable(f"{doc_id}#line-{number}", classification, f"{where}: duplicate id {doc_id!r}"))
                continue
            seen.add(doc_id)
            documents.append(Document(id=doc_id, text=CONTROL_CHARACTERS.sub("", row["text"]), classification=classification))
    if not any(d.input_error is None for d in documents):
        first = next((d.input_error for d in documents), None)
        raise DocumentInputError(f"{path} holds no readable document" + (f" (first problem: {first})" if first else ""))
    return documents


def _unreadable(doc_id: str, classification: DataClassification, why: str) -> Document:
    return Document(id=doc_id, text="", classification=classification, input_error=why)
