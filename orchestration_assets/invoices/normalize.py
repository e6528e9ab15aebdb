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
    "HK$": "HKD",
    "NZ$": "NZD",
    "MX$": "MXN",
    "NT$": "TWD",
    "R$": "BRL",
    "$": "USD",
    "RM": "MYR",
    "CHF": "CHF",
    "S$": "SGD",
    "A$": "AUD",
    "C$": "CAD",
    "₩": "KRW",
    "₱": "PHP",
    "฿": "THB",
    "₫": "VND",
    "₦": "NGN",
    "₪": "ILS",
    "₴": "UAH",
    "₽": "RUB",
    "₺": "TRY",
}
ISO_CURRENCIES = {
    "USD", "EUR", "GBP", "JPY", "CHF", "MYR", "SGD", "AUD", "CAD", "INR", "SEK", "NOK", "DKK",
    "PLN", "CZK", "CNY", "HKD", "NZD", "ZAR", "BRL", "MXN", "RUB", "KRW", "IDR", "THB", "PHP", "VND", "AED",
    "SAR", "QAR", "KWD", "ILS", "HUF", "RON", "TWD", "BHD", "OMR", "JOD", "TND", "LYD", "IQD", "TRY", "NGN", "UAH",
    "EGP", "PKR", "KES", "CLP", "COP", "ARS", "PEN",
    # more of ISO 4217, leaving out codes that are also words printed in capitals (ALL, GEL, MAD, AMD, MNT, BOB...)
    "AZN", "BYN", "UZS", "KZT", "KGS", "TJS", "MKD", "MDL", "BGN", "RSD", "BAM", "ISK", "DZD", "GHS", "UGX", "TZS",
    "ETB", "XOF", "XAF", "RWF", "MUR", "MZN", "ZMW", "BWP", "LKR", "NPR", "BDT", "KHR", "LAK", "MMK", "AFN", "IRR",
    "LBP", "PYG", "UYU", "CRC", "GTQ", "DOP", "HNL", "NIO", "PAB", "JMD", "TTD",
}
# ISO 4217 currencies with three minor digits (fils, baisa): "KWD 12.500" is twelve and a half dinars.
# (ISO gives the Iraqi dinar three too, but Iraqi amounts are written in whole dinars: "25.000 IQD" is 25,000.)
THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "LYD", "OMR", "TND"})
# Written in capitals, as codes are ("Sdn. Bhd." is a Malaysian company, not Bahraini dinars).
_THREE_DECIMAL_RE = re.compile(r"(?<![A-Za-z])(?:" + "|".join(sorted(THREE_DECIMAL_CURRENCIES)) + r")(?![A-Za-z])")

_AMOUNT_RE = re.compile(r"-?\d[\d.,' ]*\d|-?\d")
_SCIENTIFIC = re.compile(r"\s*-?\d+(?:\.\d+)?[eE][+-]?\d+\s*")
# no-break, narrow and thin spaces are spaces; the minus sign (U+2212) is a minus; a typographic apostrophe
# (U+2019, U+02BC, the prime U+2032) groups Swiss thousands as the straight one does ("3’200.00")
_TYPOGRAPHIC = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2212": "-", "\u2013": "-",
                              "\u2019": "'", "\u02bc": "'", "\u2032": "'"})
# How dinars are written locally: "KD 12.500" (Kuwait), "BD" (Bahrain), "R.O." / "RO" (Oman), "JD" (Jordan),
# "DT" (Tunisia): shared with the rules extractor, which counts them only beside an amount.
LOCAL_DINAR_MARKS = {"KD": "KWD", "BD": "BHD", "RO": "OMR", "JD": "JOD", "DT": "TND"}
LOCAL_DINAR_RE = re.compile(r"(?<![A-Za-z.])(KD|BD|R\.O\.|RO|JD|DT)(?![A-Za-z])")
# What an accounting negative opens with ("(", "( RM ", "(€") and closes with: shared with the rules extractor.
OPENS_PARENTHESIS = re.compile(r"\(\s*(?P<mark>[^\d\s()]{0,3})\s*$")
CLOSES_PARENTHESIS = re.compile(r"\s*[^\d\s()]{0,3}\s*\)")
# After an amount, a credit: "12.50-", "12.50−", "12.50 CR" (shared with the rules extractor); "12.50-15.00" is a
# range and "13.48-----" a dotted leader.
TRAILING_CREDIT = re.compile(r"[\-\u2212](?![\d\-\u2212])|\s*CR\b", re.I)
_LEADING_MINUS = re.compile(r"(?:^|[\s(])-\s*[^\d\s()]{0,3}\s*$")  # "- 12.50", "-€12.50"; not "Total:-12.50" (a separator)


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


def parse_amount(value: object, currency: Optional[str] = None) -> Optional[float]:
    """'1,234.50', '1.234,50', '1 234,50', 'RM 12.00', 1234.5 → 1234.5; unparseable → None.

    The decimal separator is whichever of '.' or ',' comes last and is followed by exactly
    one or two digits; every other '.', ',', space or apostrophe groups thousands. For a
    currency with three minor digits (``currency``, or its code in the text: KWD, BHD, OMR,
    JOD, TND, LYD) a point followed by three digits is the decimal point too ('KWD 1,250.500'
    → 1250.5), and so is a comma after point or space grouping ('1 250,500 TND'). Credits are
    negative however they are written: '-12.50', '−12.50', '–12.50', '- 12.50', '-€12.50',
    '(12.50)', '(RM 12.50)', '12.50-', '12.50 CR'; 'Total:-45.00' is 45 (a separator).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = str(value).translate(_TYPOGRAPHIC)
    if _SCIENTIFIC.fullmatch(text):  # "1e5", as JSON and models may write a number: 100000, not 1
        number = float(text)
        return number if math.isfinite(number) else None
    match = _AMOUNT_RE.search(text)
    if not match:
        return None
    raw = match.group(0).strip()
    before, after = text[: match.start()], text[match.end():]
    signed = raw.startswith("-") and not before.endswith((":", "=", "-"))  # "TOTAL:-45.00" is 45
    negative = (signed or _LEADING_MINUS.search(before) is not None or TRAILING_CREDIT.match(after) is not None
                or (OPENS_PARENTHESIS.search(before) is not None and CLOSES_PARENTHESIS.match(after) is not None))
    digits = raw.lstrip("-")
    last_sep = max(digits.rfind("."), digits.rfind(","))
    minor = len(digits) - last_sep - 1
    decimal = last_sep >= 0 and digits[last_sep + 1 :].isdigit()  # "12, 0": a space after it is no decimal part
    if decimal and (1 <= minor <= 2 or (minor == 3 and _three_minor_digits(digits, last_sep, text, currency))):
        whole, frac = digits[:last_sep], digits[last_sep + 1 :]
    else:
        whole, frac = digits, ""
    whole = re.sub(r"[.,' ]", "", whole)
    if not whole and not frac:
        return None
    number = float(f"{whole or '0'}.{frac or '0'}")
    if not math.isfinite(number):  # 400 nines is no amount
        return None
    return -number if negative and number else number


def _three_minor_digits(digits: str, last_sep: int, text: str, currency: Optional[str]) -> bool:
    """Whether the three digits after ``digits[last_sep]`` are a three-decimal currency's fils: after a point, or
    after a comma that follows point or space grouping ("1 250,500 TND") or in Tunisian dinars, written the
    French way ("12,500 DT")."""
    code = normalize_currency(currency)
    named = _THREE_DECIMAL_RE.search(text) or LOCAL_DINAR_RE.search(text)
    if code not in THREE_DECIMAL_CURRENCIES and named is None:
        return False
    tunisian = code == "TND" or (named is not None and named.group(0) in ("TND", "DT"))
    return digits[last_sep] == "." or tunisian or any(ch in digits[:last_sep] for ch in ". ")


_DEFAULT_A, _DEFAULT_B = datetime(2001, 1, 1), datetime(2002, 2, 2)
_PLAIN_ISO = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})")
_CJK_DATE = re.compile(r"(\d{4})\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]?")
# A year of the Buddhist era, as receipts in Thailand (and Laos) print it: 2567 BE is 2024 CE. No
# receipt is dated 2400-2699 CE, so a four-digit year there can only be one.
_BUDDHIST_YEAR = re.compile(r"(?<![0-9])(2[4-6][0-9]{2})(?![0-9])")
BUDDHIST_ERA_OFFSET = 543


def _common_era(text: str) -> str:
    """``text`` with a Buddhist-era year written as its common-era year (before parsing: 29 Feb 2567 BE is
    29 Feb 2024, a leap day, where 2567 itself would not be a leap year)."""
    if not _BUDDHIST_YEAR.search(text):
        return text
    return _BUDDHIST_YEAR.sub(lambda m: str(int(m.group(1)) - BUDDHIST_ERA_OFFSET), text)


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
    text = _common_era(str(value).strip())
    if not text:
        return None
    cjk = _CJK_DATE.fullmatch(text)  # 2026年3月14日, 2026년 3월 14일: what models return for Chinese, Japanese, Korean invoices
    if cjk:
        text = "-".join(cjk.groups())
    iso = re.fullmatch(r"(\d{4}[-/.]\d{1,2}[-/.]\d{1,2})(?:[T ]\d{1,2}:\d{2}.*)?", text)  # a time may follow
    if iso:
        plain = _PLAIN_ISO.fullmatch(iso.group(1))
        if plain:  # one separator throughout, what models answer: read as is, the same as dateutil reads it, faster
            try:
                return date(int(plain.group(1)), int(plain.group(3)), int(plain.group(4))).isoformat()
            except ValueError:
                return None
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
