"""Turn the many ways documents write dates, amounts and currencies into one canonical form.

Shared by the rules extractor, by the schema that validates every model's reply, and by
scoring, so "2026-03-14", "14/03/2026" and "March 14, 2026" compare equal everywhere.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Optional

from dateutil import parser as date_parser

CURRENCY_SYMBOLS = {
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "US$": "USD",
    "$": "USD",
    "RM": "MYR",
    "CHF": "CHF",
    "S$": "SGD",
    "A$": "AUD",
    "C$": "CAD",
}
ISO_CURRENCIES = {
    "USD", "EUR", "GBP", "JPY", "CHF", "MYR", "SGD", "AUD", "CAD", "INR", "SEK", "NOK", "DKK",
    "PLN", "CZK", "CNY", "HKD", "NZD", "ZAR", "BRL", "MXN", "RUB", "KRW", "IDR", "THB", "PHP", "VND", "AED",
    "SAR", "QAR", "KWD", "ILS", "HUF", "RON", "TWD",
}

_AMOUNT_RE = re.compile(r"-?\d[\d.,' ]*\d|-?\d")
_TYPOGRAPHIC_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})  # no-break, narrow, thin


def normalize_currency(value: Optional[str]) -> Optional[str]:
    """'€', 'eur', 'EUR ' → 'EUR'; unknown strings come back upper-cased, None stays None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    upper = text.upper()
    if upper in ISO_CURRENCIES:
        return upper
    for symbol, code in sorted(CURRENCY_SYMBOLS.items(), key=lambda kv: -len(kv[0])):
        if text.startswith(symbol) or upper == symbol.upper():
            return code
    return upper


def parse_amount(value: object) -> Optional[float]:
    """'1,234.50', '1.234,50', '1 234,50', 'RM 12.00', 1234.5 → 1234.5; unparseable → None.

    The decimal separator is whichever of '.' or ',' comes last and is followed by exactly
    one or two digits; every other '.', ',', space or apostrophe groups thousands.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    match = _AMOUNT_RE.search(str(value).translate(_TYPOGRAPHIC_SPACES))
    if not match:
        return None
    raw = match.group(0).strip()
    negative = raw.startswith("-")
    digits = raw.lstrip("-")
    last_sep = max(digits.rfind("."), digits.rfind(","))
    if last_sep >= 0 and 1 <= len(digits) - last_sep - 1 <= 2:
        whole, frac = digits[:last_sep], digits[last_sep + 1 :]
    else:
        whole, frac = digits, ""
    whole = re.sub(r"[.,' ]", "", whole)
    if not whole and not frac:
        return None
    number = float(f"{whole or '0'}.{frac or '0'}")
    return -number if negative else number


_DEFAULT_A, _DEFAULT_B = datetime(2001, 1, 1), datetime(2002, 2, 2)


def normalize_date(value: object, dayfirst: Optional[bool] = None) -> Optional[str]:
    """Any common date spelling → 'YYYY-MM-DD'; unparseable → None.

    Numeric dates are ambiguous ('03/04/2026'): ISO order wins when the year comes first;
    otherwise day-first, the convention of most of the world, unless ``dayfirst=False`` or
    the first number cannot be a day-of-month position (> 12 in the second slot).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if not text:
        return None
    iso = re.fullmatch(r"(\d{4}[-/.]\d{1,2}[-/.]\d{1,2})(?:[T ]\d{1,2}:\d{2}.*)?", text)  # a time may follow
    if iso:
        try:
            return date_parser.parse(iso.group(1), yearfirst=True, dayfirst=False).date().isoformat()
        except (ValueError, OverflowError):
            return None
    if dayfirst is None:
        numeric = re.fullmatch(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{2,4})", text)
        dayfirst = not (numeric and int(numeric.group(2)) > 12)
    try:
        # Parsed against two different defaults: dateutil fills a part the text lacks ("March
        # 2018", "2018", "Mon") from its default, today unless told, so a partial date would
        # come back as a made-up full one. Only a date both parses agree on is complete.
        parsed = date_parser.parse(text, dayfirst=dayfirst, fuzzy=False, default=_DEFAULT_A)
        if date_parser.parse(text, dayfirst=dayfirst, fuzzy=False, default=_DEFAULT_B).date() != parsed.date():
            return None
    except (ValueError, OverflowError):
        return None
    if not 1900 <= parsed.year <= 2100:
        return None
    return parsed.date().isoformat()
