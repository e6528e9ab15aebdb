"""Data classification: the one label that decides where a document may travel.

Ordered from least to most sensitive, so "may this model see X" is a comparison
against the most sensitive level the model is cleared for.
"""

from __future__ import annotations

from enum import Enum


class DataClassification(str, Enum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    @classmethod
    def parse(cls, value: "str | DataClassification") -> "DataClassification":
        if isinstance(value, DataClassification):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown data classification {value!r}; expected one of: {allowed}") from None


_ORDER = [
    DataClassification.PUBLIC,
    DataClassification.INTERNAL,
    DataClassification.CONFIDENTIAL,
    DataClassification.RESTRICTED,
]
