"""The unit of work of every AI asset: one document with an id, its text and its classification."""

from __future__ import annotations

import json
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


class DocumentInputError(ValueError):
    """A user's document file cannot be read as documents; the message names the line."""


def jsonl_rows(path: "str | Path") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; a line that is not a JSON object is a
    ``DocumentInputError`` naming the file and line. Non-UTF-8 bytes are replaced, not fatal."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DocumentInputError(f"input file {path} does not exist")
    with open(path, encoding="utf-8", errors="replace") as handle:
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


def read_documents_jsonl(path: "str | Path", classification: DataClassification) -> list[Document]:
    """Read ``{"id", "text"}`` objects, one a line (other keys ignored; blank lines skipped).

    Bytes that are not UTF-8 are replaced rather than fatal: an OCR export with one bad
    byte should still be processed, and the replacement character is visible downstream.
    """
    path = Path(path).expanduser()
    documents: list[Document] = []
    seen: set[str] = set()
    for number, row in jsonl_rows(path):
        if "id" not in row or not isinstance(row.get("text"), str):
            raise DocumentInputError(f'{path}:{number}: expected an object with "id" and a string "text"')
        doc_id = str(row["id"])
        if doc_id in seen:
            raise DocumentInputError(f"{path}:{number}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        documents.append(Document(id=doc_id, text=row["text"], classification=classification))
    if not documents:
        raise DocumentInputError(f"{path} holds no documents")
    return documents
