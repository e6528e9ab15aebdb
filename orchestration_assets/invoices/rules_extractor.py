"""A deterministic invoice extractor: regexes and layout heuristics, no model, no network.

Why it exists: it is the cost-0, always-available, on-prem "model" in the catalog. Routing
sends it the easy documents, it is the baseline every paid model must beat, and it keeps
the pipeline working offline. It is written for invoices and receipts in general (OCR
output included), not for any one dataset:

* labels are matched through OCR confusions (``T0TAL``, ``lnvoice``, ``Arnount``) and
  dropped spaces;
* the total is the amount on the most specific total label (``GRAND TOTAL``, ``AMOUNT
  DUE``, ``ROUNDED`` … over plain ``TOTAL``, never ``SUBTOTAL``), cross-checked against
  ``CASH − CHANGE`` when a receipt prints both;
* the tax is what the tax lines above the total add up to (CGST + SGST, two VAT rates), or
  the tax column of a VAT table printed below it (net + tax = gross);
* line items are reported only when they add up to the total (with or without the tax),
  so a partly read table never passes for a complete one.

``extract_invoice`` never raises: on any input it returns an ``InvoiceExtraction``, with
``None`` for what it could not find.
"""

from __future__ import annotations

import contextvars
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

from orchestration_assets.invoices.normalize import (
    CLOSES_PARENTHESIS, ISO_CURRENCIES, LOCAL_DINAR_MARKS, LOCAL_DINAR_RE, OPENS_PARENTHESIS, THREE_DECIMAL_CURRENCIES,
    TRAILING_CREDIT,
    normalize_date, parse_amount,
)
from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem
from resources.documents import CONTROL_CHARACTERS

MAX_LINES = 4000
MAX_LINE_CHARS = 400

# --------------------------------------------------------------------------- lines and labels

_DIGIT_AS_LETTER = {"0": "O", "1": "I", "5": "S", "8": "B"}


@dataclass(frozen=True)
class Line:
    index: int
    raw: str  # markup stripped, original case and spacing
    canon: str  # same length as raw: upper-cased, digits read as letters inside words


def _fold_accent(ch: str) -> str:
    """A Latin or Greek letter with diacritics as its base letter (À → A, Ό → Ο); any other character as it is (one
    for one). Cyrillic keeps its own (Й is not И)."""
    decomposed = unicodedata.normalize("NFD", ch)
    if ((decomposed[0].isascii() or "\u0370" <= decomposed[0] <= "\u03ff") and len(decomposed) > 1
            and all(unicodedata.combining(c) for c in decomposed[1:])):
        return decomposed[0]
    return ch


_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_AS_CYRILLIC = str.maketrans("AaBCcEeHKkMOoPpTXxYy0", "АаВСсЕеНКкМОоРрТХхУуО")
# A run of Latin look-alikes (or a 0) touching a Cyrillic letter
_LATIN_IN_CYRILLIC = re.compile(r"(?<=[\u0400-\u04ff])[AaBCcEeHKkMOoPpTXxYy0]+|[AaBCcEeHKkMOoPpTXxYy0]+(?=[\u0400-\u04ff])")


def _canon(text: str) -> str:
    """Upper-case, Latin accents folded (labels match "Net à payer" as "NET A PAYER"); a 0/1/5/8 touching a
    letter and no digit reads as O/I/S/B; '_' and the ideographic space ("合　計") read as a space."""
    if not text.isascii():
        text = "".join(map(_fold_accent, text)).replace("\u3000", " ")
        if _CYRILLIC.search(text):  # OCR mixes Latin look-alikes into Cyrillic words ("ИТOГO"): read them as Cyrillic
            text = _LATIN_IN_CYRILLIC.sub(lambda m: m.group(0).translate(_AS_CYRILLIC), text)
    upper = text.upper().replace("_", " ")
    if len(upper) != len(text):  # a few characters change length when upper-cased
        upper = "".join(ch if len(ch) == 1 else "?" for ch in (c.upper() for c in text)).replace("_", " ")
    chars = list(upper)
    for i, ch in enumerate(upper):
        if ch in _DIGIT_AS_LETTER:
            prev = upper[i - 1] if i else " "
            nxt = upper[i + 1] if i + 1 < len(upper) else " "
            if (prev.isalpha() or nxt.isalpha()) and not (prev.isdigit() or nxt.isdigit()):
                chars[i] = _DIGIT_AS_LETTER[ch]
    canon = "".join(chars)
    if _LETTER_SPACED.search(canon):  # "T O T A L" reads "TOTAL", its spaces after it: the same length, as raw
        canon = _LETTER_SPACED.sub(lambda m: m.group(0).replace(" ", "").ljust(len(m.group(0))), canon)
    return canon


_LETTER_SPACED = re.compile(r"(?<![A-Z0-9.])[A-Z](?: [A-Z]){2,}(?![A-Z0-9])")


def _strip_markup(line: str) -> str:
    line = line.replace("\t", "    ").replace("**", "").replace("__", "  ")
    line = re.sub(r"^\s*#{1,6}\s+", "", line)
    if line.count("|") >= 2:
        line = "   ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
    return line.rstrip()


_LINE_BREAK = re.compile(r"\r\n?|[\u2028\u2029\x85]")


def _lines(text: str) -> list[Line]:
    text = CONTROL_CHARACTERS.sub("", text)  # NUL, form feeds (PDF and C-string exports) are never part of a field
    # CRLF, CR, and the Unicode line and paragraph separators (and NEL) some exports write, are line breaks
    raw_lines = _LINE_BREAK.sub("\n", text).split("\n")
    if len(raw_lines) > MAX_LINES:  # keep the head and the tail, where the fields are
        raw_lines = raw_lines[: MAX_LINES // 2] + raw_lines[-MAX_LINES // 2 :]
    lines = []
    for raw in raw_lines:
        cleaned = _strip_markup(raw[:MAX_LINE_CHARS])
        if cleaned.strip() and not re.fullmatch(r"[\s\-=_*~.|:+]+", cleaned):
            lines.append(Line(len(lines), cleaned, _canon(cleaned)))
    return lines


_CODES = "(?:" + "|".join(sorted(ISO_CURRENCIES)) + "|RM)"


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7a3"


def _fuzzy(phrase: str) -> str:
    """A label phrase as a regex tolerant of OCR: L/I swaps, m→rn, dropped or doubled spaces."""
    parts = []
    for word in phrase.split():
        letters = []
        for ch in word:
            if ch in "LI":
                letters.append("[LI1]")
            elif ch == "M":
                letters.append("(?:M|RN)")
            elif ch == ".":
                letters.append(r"\.?")
            elif ch == "E":
                letters.append("[EC]")
            else:
                letters.append(re.escape(ch))
        # Between two letters, OCR may read a stray mark, or split a long word with a space ("Invo ice",
        # "Bel eg"); a CJK label is spaced out to fill its column ("合　計", "합      계")
        between = "[.,'`:; ]?" if len(word) >= 5 else "[.,'`:;]?"
        joined = letters[0]
        for previous, letter in zip(word, letters[1:]):
            joined += (r"\s*" if _is_cjk(previous) else between) + letter
        parts.append(joined)
    return r"[\s.,'`:;]*".join(parts)


def _label_re(*phrases: str) -> re.Pattern[str]:
    alternatives = "|".join(_fuzzy(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![A-Z])(?:{alternatives})(?:(?![A-Z])|(?={_CODES}(?![A-Z])))")


# --------------------------------------------------------------------------- amounts

# Marks of currencies whose amounts are written with spaces between thousands, often without minor units.
_SPACE_GROUPED_MARKS = "Ft|HUF|Kč|CZK|zł|PLN|руб|₽|RUB|грн|₴|UAH|лв|BGN|kr|SEK|NOK|DKK|ISK|₸|KZT|F?CFA|XOF|XAF|₫|đ|VND"


def _amount_pattern(three_decimals: bool) -> re.Pattern[str]:
    """Amounts as invoices write them; ``three_decimals``: a document in KWD, BHD, OMR... ("1,250.500")."""
    # Grouped thousands: by ',', '.', an apostrophe (straight or typographic) or a typographic space (no-break, narrow, thin),
    # or by a plain space where a decimal comma follows ("1 234,56": French, Nordic, Slavic
    # invoices); a plain space before a decimal point is too often a column break ("2 100.00").
    # Indian lakh grouping ("1,23,456.00") too. Three minor digits: only ',' and spaces group, '.' is decimal.
    if three_decimals:
        number = r"\d{1,3}(?:(?P<sep>[,'\u2019\u00a0\u202f\u2009])\d{3})(?:(?P=sep)\d{3})*|\d+"
        decimals, bare = r"\.\d{1,3}", r"\.\d{2,3}"
    else:
        number = (r"\d{1,3}(?:(?P<sep>[,.'\u2019\u00a0\u202f\u2009])\d{3})(?:(?P=sep)\d{3})*|\d{1,3}(?: \d{3})+(?=,\d{1,2}(?!\d))"
                  # whole amounts grouped by single spaces, right before the mark of a currency written that way
                  # ("1 250 Ft", "12 400 Kč"); elsewhere a space is too often a column break ("2 250": 2 at 250)
                  rf"|\d{{1,3}}(?: \d{{3}})+(?=\s?(?:{_SPACE_GROUPED_MARKS})(?![^\W\d_]))"
                  # or right after the mark of one that groups by spaces before a decimal point ("R 4 255.48",
                  # "CHF 7 283.65": South Africa, Switzerland)
                  r"|(?:(?<=(?<![A-Za-z])R )|(?<=ZAR )|(?<=CHF )|(?<=Fr\. ))\d{1,3}(?: \d{3})+(?=\.\d{2}(?!\d))"
                  r"|\d{1,2}(?:,\d{2})+,\d{3}|\d+")
        decimals, bare = r"[.,]\d{1,2}", r"\.\d{2}"
    return re.compile(
        r"(?=[\d.])"  # where an amount can start: the checks behind it run only there (most of a line is words)
        # Not inside a word or number; after a currency mark (a letter one too: "R131.96", "Rs.210"), a label's colon,
        # a CJK label, or a minus sign that is not a hyphen.
        r"(?:(?<![\w/:.,'\u2019\-\u2212])|(?<=[^\d]:)|(?<=RM)|(?<=\$)|(?<=€)|(?<=£)|(?<=¥)|(?<=[₹₩₱฿₫₦₴₪])"
        r"|(?<=[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3])|(?<=(?<![A-Za-z])R)|(?<=(?<![A-Za-z])R[sp])|(?<=(?<![A-Za-z])R[sp]\.)"
        r"|(?<=(?<![\w.,])[\-\u2212])|(?<=[:=\-]-))"
        rf"(?:(?P<int>{number})(?P<dec>{decimals})?|(?P<bare>{bare}))"
        # Not part of a longer word or number; a CJK currency character may follow ("1,080円", "108元", "4,300원").
        r"(?!(?![円元圆원])[\w%]|\s?%|[.,'\u2019/:-]\d)"
    )


_OCR_DIGITS = str.maketrans({"O": "0", "I": "1", "l": "1"})
_AMOUNT = _amount_pattern(three_decimals=False)
_AMOUNT_THREE_DECIMALS = _amount_pattern(three_decimals=True)
# The document's currency when it has three minor digits (set by ``_extract`` for the document it reads).
_THREE_DECIMAL_CURRENCY: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("three_decimal_currency", default=None)


def _credit(text: str, match: re.Match[str], decimal: bool) -> bool:
    """A credit: "-12.50" (a minus sign, not a hyphen or a separator), "12.50-" or "12.50 CR" (receipts, statements),
    "(12.50)" or "(RM 12.50)" (accounting). A bare whole number in parentheses is a count ("Items (3)"), not a credit."""
    start, end = match.start(), match.end()
    # A minus sign stands alone before the digits; after ':', '=' or another dash it is a separator
    # ("TOTAL:-45.00", "Total:-540.00" on Indian bills, a dotted leader "TOTAL -------13.48").
    signed = start and text[start - 1] in "-\u2212" and (start < 2 or text[start - 2] not in ":=-\u2212")
    if signed or TRAILING_CREDIT.match(text, end):
        return True
    opened = OPENS_PARENTHESIS.search(text, max(0, start - 8), start)
    return bool(opened and (decimal or opened.group("mark")) and CLOSES_PARENTHESIS.match(text, end))


@dataclass(frozen=True)
class Amount:
    value: float
    decimal: bool
    start: int
    end: int


# An amount OCR read with letters for digits ("5.ll4", "12O,3O", "RM 5.OO"): O is 0, l and I are 1. Only where
# digits lead and outnumber the letters, and a trailing letter is an O ("1.5l" is a volume).
_OCR_AMOUNT = re.compile(r"(?<![A-Za-z\d])\d[\dOlI]*(?:[.,][\dOlI]{3})*[.,][\dOlI]{2,3}(?![A-Za-z\d])")
_OCR_SUSPECT = re.compile(r"\d[OlI]|[OlI]\d|[.,][OlI]")


def _ocr_amount(match: re.Match[str]) -> str:
    token = match.group(0)
    letters = sum(ch in "OlI" for ch in token)
    if not letters or letters > sum(ch.isdigit() for ch in token) or token[-1] in "lI":
        return token
    return token.translate(_OCR_DIGITS)


def _amounts(text: str, allow_integers: bool = True) -> list[Amount]:
    if _OCR_SUSPECT.search(text):  # same length: positions hold
        text = _OCR_AMOUNT.sub(_ocr_amount, text)
    found = []
    currency = _THREE_DECIMAL_CURRENCY.get()
    for match in (_AMOUNT_THREE_DECIMALS if currency else _AMOUNT).finditer(text):
        if match.group("bare"):
            cents = float("0" + match.group("bare"))
            before = found[-1] if found else None
            if before is not None and not before.decimal and before.end + 1 == match.start() and text[before.end] == " ":
                # OCR split one amount at its point ("RM 12 .50"): 12.50, not 12 and 0.50
                found[-1] = Amount(before.value + cents, True, before.start, match.end())
            else:
                found.append(Amount(cents, True, match.start(), match.end()))
            continue
        decimal = match.group("dec") is not None
        if not decimal and not allow_integers:
            continue
        value = parse_amount(match.group(0), currency)
        if value is not None and value < 1e10:
            found.append(Amount(-value if value and _credit(text, match, decimal) else value, decimal, match.start(), match.end()))
    return found


def _last_amount(text: str, integers: bool) -> Optional[Amount]:
    amounts = _amounts(text)
    decimals = [a for a in amounts if a.decimal]
    if decimals:
        return decimals[-1]
    if integers and amounts:
        return amounts[-1]
    return None


def _uses_decimals(lines: list[Line]) -> bool:
    """Whether the document prices in minor units: two decimal amounts that are not quantities ("0,35 kg")."""
    return sum(1 for line in lines for a in _amounts(line.raw)
               if a.decimal and not _QUANTITY_UNIT.match(line.raw, a.end)) >= 2


_UNITS = r"kg|g|mg|l|ml|cl|lb|lbs|oz|pcs|pk"  # weights, volumes and counts printed after a quantity
_QUANTITY_UNIT = re.compile(rf"\s?(?:{_UNITS}|m|km)\b", re.I)  # and lengths: "0,35 kg", "2,5 m"


def _only_amount(line: Line) -> bool:
    """A line that holds an amount and at most a currency mark ("RM 12.00", "R850.00", "1,080円"): the value of
    the label above it. A word in any script ("应收: ¥127.03") makes it a line of its own."""
    letters = re.sub(r"\b(?:RM|[A-Z]{3})\b|(?<![A-Z])R[SP]?\.?(?=\s?\d)|[円元圆원]|[\W\d_]", "", line.canon)
    return not letters and bool(_amounts(line.raw))


# --------------------------------------------------------------------------- total and tax

_TOTAL_STRONG = _label_re(
    "GRAND TOTAL", "TOTAL DUE", "AMOUNT DUE", "BALANCE DUE", "TOTAL PAYABLE", "AMOUNT PAYABLE",
    "NET PAYABLE", "NETT TOTAL", "NETT AMOUNT", "TOTAL ROUNDED", "ROUNDED TOTAL", "TOTAL AMOUNT DUE",
    "AMOUNT TO PAY", "TOTAL TO PAY", "TOTAL INCL", "INCLUSIVE", "INCL. TAX", "INCL. VAT", "INCL. GST",
    "TOTAL TTC", "MONTANT TTC", "NET A PAYER", "GESAMTBETRAG", "ENDBETRAG", "RECHNUNGSBETRAG", "TE BETALEN",
    "TOTAL A PAGAR", "VALOR A PAGAR", "IMPORTE A PAGAR", "JUMLAH BESAR", "IMPORTE TOTAL", "TOTALE DA PAGARE",
    "DO ZAPLATY", "K UHRADE", "ATT BETALA", "A BETALE", "AT BETALE", "MAKSETTAVA", "TOTAL DE PLATA", "VEGOSSZEG",
    "FIZETENDO", "PAYABLEAMOUNT", "PAYABLE AMOUNT", "ΠΛΗΡΩΤΕΟ", "ИТОГО К ОПЛАТЕ", "К ОПЛАТЕ", "ДО СПЛАТИ",
    "ЗА ПЛАЩАНЕ", "ZA NAPLATU", "ZA PLACILO", "KOKKU TASUDA", "SPOLU K UHRADE", "IS VISO", "KOPA APMAKSAI",
    "รวมทั้งสิ้น", "お会計", "ご請求金額",
    "應付金額", "应付金额", "TOTAL BAYAR",
)
# Plain totals in the languages invoices and receipts are most often written in: English, German,
# Dutch, French, Malay/Indonesian, Italian, Spanish/Portuguese, Nordic, Polish/Czech/Slovak, Turkish,
# Russian, Ukrainian, Bulgarian, Balkan, Baltic, Caucasian, Central Asian, Arabic, Japanese, Chinese and Korean.
_TOTAL_PLAIN = _label_re("TOTAL", "TOTAL AMOUNT", "TOTAL SALES", "GESAMT", "SUMME", "TOTAAL", "MONTANT", "JUMLAH",
                         "TOTALE", "IMPORTE", "TOTALT", "I ALT", "SUMMA", "YHTEENSA", "YHTEENSÄ", "RAZEM", "SUMA",
                         "CELKEM", "TOPLAM", "ИТОГО", "ИТОГ", "ВСЕГО", "合計", "合计", "总计", "總計", "小計合計", "합계",
                         "OSSZESEN", "TONG CONG", "ΣΥΝΟΛΟ", 'סה"כ', "ОБЩО", "РАЗОМ", "ВСЬОГО", "СУМА",
                         "UKUPNO", "УКУПНО", "SKUPAJ", "SPOLU", "CELKOM", "KOKKU", "KOPA", "SAMTALS", "სულ", "المجموع",
                         "الإجمالي", "ВКУПНО", "TOTALI", "JAMI", "CƏMI", "НИЙТ ДҮН", "ԸՆԴԱՄԵՆԸ")
_TOTAL_WEAK = _label_re("AMOUNT", "AMT", "BALANCE", "NET AMOUNT", "DUE")
_TOTAL_EXCLUDE = _label_re(
    "SUBTOTAL", "SUB TOTAL", "SUB-TOTAL", "TOTAL QTY", "TOTAL QUANTITY", "QTY", "TOTAL ITEM", "ITEMS", "ITEM",
    "EXCL", "EXCLUDING", "EXCLUDED", "EXCLUSIVE", "BEFORE", "TOTAL TAX", "TOTAL GST", "TOTAL VAT", "TOTAL SST",
    "DISCOUNT", "SAVING", "SAVINGS", "TOTAL HT", "NET AMOUNT", "NETTOBETRAG", "ZWISCHENSUMME", "CHANGE",
    "TENDERED", "ROUNDING ADJ", "ADJUSTMENT", "POINTS", "TAXABLE", "WEIGHT", "DEPOSIT", "DUE DATE",
    "COUPON", "COUPONS", "VOUCHER", "VOUCHERS", "件数", "点数", "TOTAL TVA", "TOTAL IVA", "TOTAL MWST", "TOTAL BTW",
    "TOTAL MOMS", "TOTAL MVA", "TOTAL TAXES", "FARA", "SIN IVA", "OHNE", "SANS TVA", "HORS TAXES",
)
# What was paid, when a receipt prints no total ("Amount Paid $7.50"): a weak total, under any TOTAL line.
_PAID_TOTAL = _label_re("AMOUNT PAID", "AMT PAID", "PAID AMOUNT")
_ROUNDED = re.compile(r"ROUND")
_TAX_INCLUDED = re.compile(r"(?:VAT|GST|SST|TAX)\b.*\bINCLUDED|\bINCLUDED\b.*(?:VAT|GST|SST|TAX)\b|"
                           # "GST 9% Inclusive 1.36", "VAT incl. 3.27": the tax a total includes, not the total
                           r"^\s*(?:VAT|GST|SST|TAX|MWST|TVA|IVA|BTW)\b(?!.*TOTAL).*\bINCL(?:USIVE|\.|\b)")
_CASH = _label_re("CASH", "TENDERED", "CASH PAID", "PAID", "PAYMENT", "CASH TENDERED", "CREDIT", "CARD", "VISA", "PAY")
_CASH_EXCLUDE = _label_re("CASH BILL", "CASHIER", "CASH SALE", "CASH SALES", "CASH REGISTER")
_CHANGE = _label_re("CHANGE", "CHANGE DUE", "KEMBALI")
_EXCHANGE = _label_re("EXCHANGE", "EXCHANGEABLE")


@dataclass(frozen=True)
class Candidate:
    tier: int
    value: float
    index: int


def _total_tier(canon: str) -> int:
    """3: a final-amount label; 2: plain TOTAL; 1: AMOUNT/BALANCE; 0: not a total line."""
    rounded_total = _ROUNDED.search(canon) and _TOTAL_PLAIN.search(canon) and "ADJ" not in canon
    if _TAX_INCLUDED.search(canon):  # "GST @6% INCLUDED IN TOTAL: 0.51" states the tax
        return 0
    if rounded_total or _TOTAL_STRONG.search(canon):
        if "SUB" not in canon.replace(" ", "")[:12] and not re.search(r"EXCL|BEFORE", canon):
            return 3
    if _TOTAL_EXCLUDE.search(canon) or _TAX_INCLUDED.search(canon):
        return 0
    if _TOTAL_PLAIN.search(canon):
        return 2
    if _TOTAL_WEAK.search(canon) and not re.search(r"TAX|VAT|GST|SST|PAID|TENDER", canon):
        return 1
    if _PAID_TOTAL.search(canon) and not re.search(r"TAX|VAT|GST|SST", canon):
        return 1
    return 0


# A conversion quoted beside an amount ("Total EUR 100.00 (approx. USD 108.00)", "(≈ $108)", "(= $5.50)"): not
# what is due. Alone on the line under a total, only when it says it converts: "($5.00)" alone is a credit.
_APPROXIMATELY = r"=|≈|~|APPROX|CA\.|CIRCA|EQUIV|ENV\.|ENVIRON|ETWA|APROX|APPROSS"
_CONVERSION = re.compile(rf"\(\s*(?:{_APPROXIMATELY}|USD|EUR|US\$|\$)[^()]*\)", re.I)
_CONVERSION_LINE = re.compile(rf"\s*\(\s*(?:{_APPROXIMATELY})", re.I)


def _value_after_label(lines: list[Line], i: int, integers: bool) -> Optional[Amount]:
    """The amount on the label's line (a conversion quoted in brackets aside), or on the next line when it holds
    only an amount."""
    raw = lines[i].raw
    if "(" in raw:  # blanked, only after an amount: "($5.00)" alone is an accounting credit
        raw = _CONVERSION.sub(lambda m: " " * len(m.group(0)) if _amounts(raw[: m.start()]) else m.group(0), raw)
    amount = _last_amount(raw, integers)
    if amount is not None:
        return amount
    if i + 1 < len(lines) and _only_amount(lines[i + 1]) and not _CONVERSION_LINE.match(lines[i + 1].raw):
        return _last_amount(lines[i + 1].raw, integers)
    return None


def _total_candidates(lines: list[Line], integers: bool) -> list[Candidate]:
    candidates = []
    for i, line in enumerate(lines):
        tier = _total_tier(line.canon)
        if tier:
            amount = _value_after_label(lines, i, integers)
            if amount is not None:
                candidates.append(Candidate(tier, amount.value, i))
    return candidates


def _cash_minus_change(lines: list[Line], integers: bool) -> Optional[float]:
    cash = change = None
    for i, line in enumerate(lines):
        if _CHANGE.search(line.canon) and not _EXCHANGE.search(line.canon):
            amount = _value_after_label(lines, i, integers)
            change = amount.value if amount else change
        elif _CASH.search(line.canon) and not _CASH_EXCLUDE.search(line.canon):
            amount = _value_after_label(lines, i, integers)
            cash = amount.value if amount else cash
    if cash is None or change is None or cash < change:
        return None
    return round(cash - change, 3)


# The title of a document that credits money back: its total is the credit, not the invoice it quotes.
_CREDIT_TITLE = re.compile(r"(?<![A-Z])(?:CREDIT NOTE|CREDIT MEMO|GUTSCHRIFT|AVOIR|NOTA DE CREDITO|NOTA DI CREDITO|"
                           r"CREDITNOTA|REFUND RECEIPT|RETURN RECEIPT)(?![A-Z])")


def _choose_total(candidates: list[Candidate], paid: Optional[float], credit_note: bool = False) -> Optional[Candidate]:
    """The amount paid (cash − change) when a total label shows it; else the largest amount on the
    most specific label (on a credit note, its largest credit, over the total it quotes from the
    invoice it credits); a paid amount a rounding step away from that wins (cash rounding)."""
    if paid is not None:
        matching = [c for c in candidates if abs(c.value - paid) < 0.005]
        if matching:
            return max(matching, key=lambda c: (c.tier, c.index))
    if not candidates:
        return Candidate(0, paid, -1) if paid else None
    top = max(c.tier for c in candidates)
    best = [c for c in candidates if c.tier == top]
    positive = [c for c in best if c.value > 0]
    if credit_note and len(positive) < len(best):
        positive = []
    if positive:
        chosen = max(positive, key=lambda c: (c.value, c.index))
    else:  # a credit note: every total is negative (or nothing is due); the largest credit is its total
        chosen = min(best, key=lambda c: (c.value, -c.index))
    if paid is not None and 0 < abs(paid - chosen.value) <= 0.05:
        return Candidate(chosen.tier, paid, chosen.index)
    return chosen


_TAX = _label_re(
    "VAT", "GST", "SST", "TAX", "SALES TAX", "MWST", "UST", "TVA", "BTW", "IVA", "CONSUMPTION TAX",
    "SERVICE TAX", "MEHRWERTSTEUER", "UMSATZSTEUER", "STEUER", "HST", "PST", "QST", "MOMS", "ALV", "KDV", "DPH", "PVN",
    "НДС", "CGST", "SGST", "IGST", "UTGST", "PTU", "MVA", "AFA", "IGV", "I.G.V.", "PPN", "GTGT", "ΦΠΑ", 'מע"מ',
    # Balkan, Baltic, Icelandic, Ukrainian, Bulgarian and Thai VAT
    "PDV", "ПДВ", "DDV", "PVM", "KAIBEMAKS", "VSK", "ДДС", "ภาษีมูลค่าเพิ่ม", "ДДВ", "ƏDV", "QQS", "НӨАТ", "ԱԱՀ",
    "TVSH", "ITBIS",
    "PBI",  # Indonesia's restaurant tax, PB1 (the canonical line reads its 1 as I)
    "TRIBUTOS",  # Brazil: "Tributos Totais Incidentes (Lei Federal 12.741/2012)", what a receipt must state
    "消費税", "消费税", "税额", "税額", "稅額", "外税", "内税", "부가세",
)
_TAX_EXCLUDE = _label_re(
    "TAX INVOICE", "INVOICE", "ID", "NO", "NUMBER", "REG", "REGISTRATION", "CODE", "SUMMARY", "EXCL", "EXCLUDING",
    "EXCLUDED", "EXCLUSIVE", "TAXABLE", "BEFORE", "AFTER", "RATE", "対象", "SPRZED", "OPOD",
    # the amount without the tax (Romanian, Spanish, German, French, Dutch, Italian, Portuguese, Nordic, Slavic)
    "FARA", "SIN", "OHNE", "SANS", "HORS", "EXKL", "ZONDER", "SENZA", "SEM", "UTAN", "UDEN", "BEZ", "БЕЗ", "לפני",
)
# "Total incl. VAT 119.00" states the total; "VAT incl. 6.65" and "inkl. 10% USt 6,50" state the tax.
_INCLUDING = _label_re("INCL", "INCLUDING", "INCLUSIVE", "INKL", "INKLUSIVE", "INKLUSIV")


# Ukrainian and Russian "with VAT" ("Всього з ПДВ", "Итого с НДС"): a total including the tax
_WITH_TAX = re.compile(r"(?<![А-ЯЁІЇЄҐA-Z])[ЗС]\s+(?:ПДВ|НДС)")


def _tax_line(canon: str) -> bool:
    label = _TAX.search(canon)
    if not label or _TAX_EXCLUDE.search(canon) or _WITH_TAX.search(canon):
        return False
    if canon[: label.start()].rstrip().endswith("(") and canon[: label.start()].strip("( "):
        return False  # a note on what the line charges ("Property rates  (VAT 0%)  842.65"), not a tax
    including = _INCLUDING.search(canon)
    # "Total incl. VAT 119.00", "SUB TOTAL (INCL. GST) 35.40": a sum including the tax, not the tax
    return not (including and including.start() < label.start() and (_total_tier(canon) or _TOTAL_EXCLUDE.search(canon)))


def _states_included_tax(canon: str) -> bool:
    """"inkl. 10% USt 6,50", "Incl. VAT 92.45": the tax the total includes, all of it (after a VAT table, its sum
    restated, never one more part)."""
    including, label = _INCLUDING.search(canon), _TAX.search(canon)
    return bool(including and label and including.start() < label.start())


def _net_tax_gross(amounts: list[Amount]) -> Optional[float]:
    """The tax of a VAT table row ("A 19%  10,00  1,90  11,90": net + tax = gross, in any column order): the
    smaller of the two amounts that add up to a third."""
    values = [a.value for a in amounts if a.value > 0][-4:]
    for i, first in enumerate(values):
        for second in values[i + 1 :]:
            if any(_close(first + second, third, 0.011) for third in values if third not in (first, second)):
                return min(first, second)
    return None


_RATE = re.compile(r"(?<![\d.,])(\d{1,2}(?:[.,]\d{1,2})?)\s?%")


def _rated_tax(raw: str, amounts: list[Amount]) -> Optional[float]:
    """The tax of a row that states its rate ("9%  9,82  0,88", "CGST 2.5% on 200.00  5.00"): the amount that
    is the rate applied to another (on the net) or contained in it (in the gross)."""
    rates = [float(m.group(1).replace(",", ".")) for m in _RATE.finditer(raw)]
    values = [a.value for a in amounts if a.value >= 0]
    for rate in rates:
        for base in values:
            for tax in values:
                if tax < base and any(_close(tax, base * share, 0.011 + 0.0005 * base)
                                      for share in (rate / 100, rate / (100 + rate))):
                    return tax
        if rate == 0 and len(values) >= 2 and min(values) == 0:  # a zero-rated row: no tax
            return 0.0
    return None


def _row_tax(line: Line, integers: bool) -> Optional[float]:
    amounts = [a for a in _amounts(line.raw) if a.decimal or integers]
    found = _net_tax_gross(amounts) if len(amounts) >= 3 else None
    return found if found is not None else _rated_tax(line.raw, amounts)


@dataclass(frozen=True)
class _Table:
    tax: float
    rows: int
    last: int  # index of its last row


def _table_tax(lines: list[Line], header: int, integers: bool) -> Optional[_Table]:
    """The tax column of a VAT table under its title or header ("MwSt%  Netto  MwSt  Brutto"; one line of column
    names may come between), summed over its rows (each net + tax = gross, or its rate applied); a last row that
    is their sum ("Gesamt 13,12  1,63  14,75") is not counted twice."""
    taxes: list[float] = []
    last = header
    for position, line in enumerate(lines[header + 1 : header + 9], start=header + 1):
        if position == header + 1 and not _amounts(line.raw):  # the column names under a title
            continue
        tax = _row_tax(line, integers)
        if tax is None or (taxes and _close(tax, sum(taxes), 0.011)):
            break
        taxes.append(tax)
        last = position
    return _Table(round(sum(taxes), 3), len(taxes), last) if taxes else None


# Another field's label on the tax line ("PPN : 5.114  DPP : 46.486", "VAT: 2.00  NET: 10.00"): the tax is before it.
_NEXT_LABEL = re.compile(r"\s[^\W\d_]{2,}\.?\s*:")


def _tax_on_line(lines: list[Line], i: int, integers: bool) -> Optional[float]:
    line = lines[i]
    label = _TAX.search(line.canon)
    after_label = label.end() if label else 0
    # another tax word is the same label ("Tax (Sales Tax: 8.875%)"); a label with no figure before it is part of
    # the tax's own ("GST PAYABLE: 1.76")
    following = next((m for m in _NEXT_LABEL.finditer(line.raw, after_label)
                      if not _TAX.search(line.canon[m.start() : m.end()])), None)
    if following and _amounts(line.raw[following.end() :]) and re.search(r"\d", line.raw[after_label : following.start()]):
        found = _last_amount(line.raw[: following.start()], integers)
        return found.value if found is not None else None
    on_line = [a for a in _amounts(line.raw) if a.decimal or integers]
    amount = _net_tax_gross(on_line) if len(on_line) >= 3 else None
    if amount is None:
        found = _value_after_label(lines, i, integers)
        amount = found.value if found is not None else None
    return amount


def _tax_values(lines: list[Line], span: range, integers: bool) -> tuple[Optional[float], list[float]]:
    """(a total-tax line's amount, the other tax lines' amounts) over ``span``. A line that states the sum of
    two or more parts read above it ("ΣΥΝΟΛΟ ΦΠΑ 5,40", "Sum MVA 643,60") is their total, not one more part."""
    total_line = None
    values: list[float] = []
    parts = 0
    consumed = -1  # the last row of a VAT table already read
    for i in span:
        line = lines[i]
        if i <= consumed or not _tax_line(line.canon):
            continue
        rows = 1
        if not any(a.decimal or integers for a in _amounts(line.raw)):  # a VAT table's title or header
            # (an items table's header with a Tax column, "DESCRIPTION  QTY  TOTAL  TAX", heads no VAT table)
            table = None if _ITEMS_HEADER.search(line.canon) else _table_tax(lines, i, integers)
            if table is not None:
                amount, rows, consumed = table.tax, table.rows, table.last
            else:  # or a label whose amount is alone on the next line
                found = _value_after_label(lines, i, integers)
                amount = found.value if found is not None else None
        else:
            amount = _tax_on_line(lines, i, integers)
        if amount is None:
            continue
        if (re.search(r"TOTAL", line.canon) or _states_included_tax(line.canon)
                or (parts >= 2 and _close(amount, sum(values), 0.011))):
            total_line = amount
        else:
            values.append(amount)
            parts += rows
    return total_line, values


def _extract_tax(lines: list[Line], before: int, total: Optional[float], integers: bool) -> Optional[float]:
    """The tax stated above the total (summed over its lines: CGST + SGST, two VAT rates), or, when none is, the
    one a receipt prints below it (a VAT table after the total). A "total tax" line wins over its parts."""
    total_line, values = _tax_values(lines, range(before), integers)
    if total_line is None and not values:
        total_line, values = _tax_values(lines, range(before + 1, len(lines)), integers)
    tax = total_line if total_line is not None else (round(sum(values), 3) if values else None)
    if tax is None and total:
        tax = _summary_row_tax(lines, total, integers)
    if tax is None:
        tax = _summary_table_tax(lines, integers)
    if tax is not None and total is not None and tax >= total > 0:
        return None
    return tax


_TAX_SUMMARY = re.compile(r"(?<![A-Z])(?:SUMMARY|ANALYSIS|BREAKDOWN)(?![A-Z])")


def _summary_table_tax(lines: list[Line], integers: bool) -> Optional[float]:
    """The tax column of a table titled as a summary ("VAT Summary   Net   VAT" over "20.00%  10.92  2.18"), when
    nothing else states the tax: such a title is passed over above (``_TAX_EXCLUDE``), since a receipt that also
    prints its tax on a line of its own would count it twice."""
    for i, line in enumerate(lines):
        if _TAX.search(line.canon) and _TAX_SUMMARY.search(line.canon) and not _amounts(line.raw):
            table = _table_tax(lines, i, integers)
            if table is not None:
                return table.tax
    return None


def _summary_row_tax(lines: list[Line], total: float, integers: bool) -> Optional[float]:
    """A tax printed only as a column of a total row ("RAZEM  1 000,00  230,00  1 230,00", "合 计 ¥530.97 ¥69.03"
    above "价税合计 ¥600.00"): the smaller of two amounts on a total line that add up to the total."""
    for line in lines:
        if not _total_tier(line.canon):
            continue
        values = [a.value for a in _amounts(line.raw) if (a.decimal or integers) and 0 < a.value < total]
        for i, first in enumerate(values):
            for second in values[i + 1 :]:
                if _close(first + second, total, 0.011):
                    return min(first, second)
    return None


# --------------------------------------------------------------------------- invoice number

def _words(words: str) -> str:
    """Alternatives of one-word labels, each as ``_fuzzy`` reads it (OCR splits: "Bel eg", "Fatu re")."""
    return "|".join(_fuzzy(word) for word in words.split())


# A word ("No", "Number", Italian "N.") ends where a letter or digit would go on; "N°", "Nº" and "#" may touch the
# number ("Check #4411", "Facture N°2026-001"); a hyphen may join it to the label ("Bon-Nr.", "Beleg-Nr.").
# Czech and Slovak write "č." (číslo), Hungarian "sorszáma" or "száma", Cyrillic scripts "№".
# Croatian and Serbian "br." (broj; in Cyrillic "бр.", as Macedonian and Bulgarian), Slovenian "št.", Hebrew "מס'".
_NUMBER_WORD = (rf"[\s.,'`:;\-]*(?:(?:{_fuzzy('NUMBER')}|NUMERO|NUMMER|NO|NR|NRO|NUM|ID|REF|SORSZAMA?|SZAMA|BR|BROJ|ST|БР|НР)"
                r"(?![A-Z0-9А-ЯЁ])\.?|N°|Nº|№|N\.|C\.(?=\s*[A-Z0-9])|#|מס'?)")
# What may stand between a document's type and its number word: "BOLETA ELECTRÓNICA N°", "Factura Electrónica de
# Venta No.", "FACTURA B (Cód. 006) Nº", "FATURA SIMPLIFICADA Nº", "РАХУНОК НА ОПЛАТУ №", "СЧЁТ-ФАКТУРА №"
_TYPE_QUALIFIER = (r"(?:\s+(?:ELE[CK]TRONI[CK]AS?|ELECTRONIQUE|SIMPLIFICADA|FISCAL|DE VENTA|DE CONSUMO|[ABCE](?![A-Z])"
                   r"|НА ОПЛАТУ)|-ФАКТУРА)*"
                   r"(?:\s*\([^)\n]{0,24}\))?")
# The document's type named directly before a colon and its number ("FACTURA SIMPLIFICADA: T-118", "TICKET: 0042")
_TYPE_COLON = r"(?:\s+SIMPLIFICADA)?\s*[:：]"
# The document's own number first; an order, transaction or ticket number only when it has none.
_NUMBER_LABEL = re.compile(
    r"(?<![A-ZА-ЯЁ])(?:"
    + "|".join(
        [
            rf"(?:{_fuzzy('INVOICE')}|INV|{_fuzzy('RECEIPT')}|RCPT|{_fuzzy('BILL')}|RECHNUNGS?|"
            + _words("FACTURE FACTUUR GUTSCHRIFT BELEG QUITTUNG FACTURA FATTURA FATURA FATURE FAKTURA AVOIR KVITTO")
            + f"|{_fuzzy('NOTA FISCAL')}|{_fuzzy('CREDIT NOTE')}|{_fuzzy('FAKTURA VAT')}"
            + r"|PARAGON(?: FISKALNY)?|REC|BON|RESIT|FOLIO|NOTE|"
            + _words("REGNING KVITTERING LASKUN LASKU KUITTI BOLETA TIQUETE COMPROBANTE DOKLAD UCTENKA NYUGTA SZAMLA CHITANTA"
             " CREDITNOTA")
            + r"|BON FISCAL|FIS|OR|NOTA|STRUK|CUPOM(?: FISCAL)?"
            # NF-e and NFC-e (Brazil); Russian, Ukrainian, Bulgarian, Macedonian, Serbian and Mongolian receipts,
            # invoices, bills and fiscal slips; Uzbek, Azerbaijani and Turkish "chek", "çek"
            r"|NFC?-?E|ЧЕК|СЧЕТ|СЧЁТ|РАХУНОК|КВИТАНЦИЯ|КВИТАНЦІЯ|ФАКТУРА|БОН|СМЕТКА|РАЧУН|БАРИМТ|CHEK|CEKI?"
            # Balkan, Baltic, Nordic, Icelandic, Greek, Georgian and Hebrew receipts and invoices
            + "|" + _words("RACUN KVITAS KVITO ARVE CEKS KVITTUN REIKNINGUR SALGSKVITTERING KASSEKVITTERING KASSAKVITTO")
            + rf"|ΑΠΟΔΕΙΞΗ|ΑΠΟΔ|ΤΙΜΟΛΟΓΙΟ|ქვითარი|ინვოისი|קבלה|חשבונית){_TYPE_QUALIFIER}{_NUMBER_WORD}",
            rf"(?:{_fuzzy('INVOICE')}|{_fuzzy('RECEIPT')}|RCPT|FACTURA|FACTURE|RECIBO|BON|BELEG|RESIT|FOLIO){_TYPE_COLON}",
            r"RECHNUNGSNUMMER|RECHNUNGSNR|FACTUURNUMMER|发票号码|發票號碼|領収書番号|請求書番号|영수증\s?번호|小票号|票据号",
            # Arabic "invoice number" (both word orders) and "receipt number"; Persian "invoice number"
            r"رقم الفاتور[ةه]|فاتورة رقم|رقم الإ?يصال|شماره فا[كک]تور",
            r"(?:RECEIPT|INVOICE|BILL)\s*#",
            # the number word first: "N° ticket : 000451", "Nº de factura 12", "Numéro de reçu"
            # (Polish "Nr paragonu", Portuguese "Nº do talão", Czech "Číslo dokladu", Vietnamese "Số hóa đơn")
            r"(?:N°|Nº|№|NO\.?|NR\.?|NUM(?:ERO)?\.?|CISLO|SO(?=\s+H[OĐD])|ΑΡ\.?|ΑΡΙΘΜΟΣ)\s*(?:DE\s+|DU\s+|DO\s+|DA\s+)?"
            r"(?:TICKET|FACTURE|FACTURA|RECU|RECIBO|BON|COMPROBANTE|PARAGONU|FAKTURY|RACHUNKU|DOKLADU|UCTENKY|TALAO"
            r"|CUPOM|NOTA|STRUK|HOA [DĐ]ON|H[DĐ]|ΑΠΟΔ(?:ΕΙΞΗΣ)?\.?|ΤΙΜΟΛΟΓΙΟΥ)(?![A-Z])",
        ]
    )
    + r")"
)
_OTHER_NUMBER_LABEL = re.compile(
    rf"(?<![A-Z])(?:(?:DOC(?:UMENT[O]?)?|{_fuzzy('ORDER')}|TRANS?(?:ACTION)?|TXN|{_fuzzy('SLIP')}|{_fuzzy('TICKET')}"
    rf"|CHEQUE|CHECK|CHK|COMANDA){_NUMBER_WORD}|(?:{_fuzzy('TICKET')}|CHECK|CHK|{_fuzzy('ORDER')}|COMANDA|TRANS?|{_fuzzy('SLIP')})"
    # a ticket, transaction or slip number printed right after its label ("TICKET 0023", "Trans 4471 Op 9100")
    rf"(?:{_TYPE_COLON}|(?=\s+\d{{3,}}(?![\d.,/:]))))"
    r"|取引番号|주문번호|거래번호|流水号|订单号|注文番号"
)
_BARE_NUMBER_LABEL = re.compile(rf"(?<![A-Z])(?:{_fuzzy('INVOICE')}|INV|{_fuzzy('RECEIPT')}|REF(?:ERENCE)?)(?![A-Z])\.?")
# "No." opening a line, or after a word in another script or a bracket ("取引No.3318", "[영수증]  No. 2024-0027"):
# never after a Latin word, where it is whose number ("Terminal No.", "Table No.") rather than the document's.
# "№" likewise ("ԿՀ № 45821"), but never after a Cyrillic word: a Cyrillic receipt names its own number with its
# type ("Чек №", above), and numbers its shift, register and fiscal drive with the sign ("Смена № 41", "ФН № 92…").
# Hebrew "מספר" (number) opening a line under its document's type, as "No." does.
_NO_LABEL = re.compile(r"(?:^|[^\x00-\x7F]|[\])])\s*N(?:O|R|°|º|\.º|\.°)\.?(?=[\s:#]|(?<=\.)\d)"
                       r"|(?:^|[^\x00-\x7F\u0400-\u04FF]|[\])])\s*№|^\s*מספר")
_NUMBER_VALUE = re.compile(r"[\s:#.\-=',;`：＃\])]*(?P<value>(?:[A-Z]{1,4} )?[A-Z0-9А-ЯЁІЇЄҐΑ-Ω][A-Z0-9А-ЯЁІЇЄҐΑ-Ω\-/_.]*"
                           r"[A-Z0-9А-ЯЁІЇЄҐΑ-Ω]|\d)", re.I)
_INV_PATTERN = re.compile(r"(?<![A-Z0-9])INV[-/]?\d{2,}[\w\-/]*", re.I)


def _number_value(raw: str, start: int) -> Optional[str]:
    match = _NUMBER_VALUE.match(raw, start)
    if not match:
        return None
    value = match.group("value").strip(".-/")
    if value.isdigit() and re.match(r"[.,]\d", raw[match.end():]):  # "1,234.50" cut at its comma: an amount
        return None
    if not re.search(r"\d", _canon(value)) or _looks_like_date(value):
        return None
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{2})", value):  # an amount, not a number
        return None
    if " " in value:
        if _looks_like_date(value.split()[-1]):  # "RECEIPT THRU 01/13/2025": a deadline, not a number
            return None
        if not re.fullmatch(r"[A-Z]{1,4} \d[\d/\-]*\d", value):  # a series before it: "FT 2024/385", "CR 1805/0201"
            value = value.split()[0] if re.search(r"\d", value.split()[0]) else value.split()[-1]
    return value


def _labelled_number(lines: list[Line], pattern: re.Pattern[str], shortest: int = 1) -> Optional[str]:
    for line in lines:
        for match in pattern.finditer(line.canon):
            value = _number_value(line.raw, match.end())
            if value and len(value) >= shortest:
                return value
    return None


def _extract_number(lines: list[Line]) -> Optional[str]:
    """Labelled number first ('Invoice No: X', then 'Order No: X'), then an INV-… token, then 'Invoice X' / 'No. X'."""
    return _ocr_digits(_found_number(lines))


def _found_number(lines: list[Line]) -> Optional[str]:
    found = _labelled_number(lines, _NUMBER_LABEL) or _labelled_number(lines, _OTHER_NUMBER_LABEL)
    if found:
        return found
    for line in lines:
        match = _INV_PATTERN.search(line.raw)
        if match:
            return match.group(0)
    found = _labelled_number(lines, _BARE_NUMBER_LABEL)
    if found:
        return found
    # A bare "No." numbers many things; a short one (a register's, a clerk's: "責No.015") is passed over
    return _labelled_number(lines, _NO_LABEL, shortest=4)


# A letter OCR reads for a digit (O for 0, l, I or | for 1) where only a digit can be: after a digit,
# and before another one or at the number's end ('7765O2', '034l'). A letter that starts a run
# ('B0200045821', 'INV-') or follows another letter is the number's own.
_LOOKALIKE_DIGIT = re.compile(r"(?<=\d)[OolI|](?=\d|$)")
_AS_DIGIT = {"O": "0", "o": "0", "l": "1", "I": "1", "|": "1"}


def _ocr_digits(number: Optional[str]) -> Optional[str]:
    if not number or not _LOOKALIKE_DIGIT.search(number):
        return number
    return _LOOKALIKE_DIGIT.sub(lambda m: _AS_DIGIT[m.group(0)], number)


# --------------------------------------------------------------------------- date

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_PATTERNS = [
    re.compile(r"(?<![\d/.-])(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![\d])"),
    re.compile(r"(?<![\d/.-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![\d]|[/.-]\d)"),
    re.compile(rf"(?<![\d])(\d{{1,2}})(?:st|nd|rd|th)?[\s\-./]*({_MONTH})[\s\-./,]*(\d{{4}}|\d{{2}})(?!\d)", re.I),
    re.compile(rf"(?<![a-z])({_MONTH})\s*(\d{{1,2}})(?:st|nd|rd|th)?,?\s*(\d{{4}})(?!\d)", re.I),
    # Chinese, Japanese and Korean: 2018年3月5日, 2018년 3월 5일
    re.compile(r"(?<!\d)(\d{4})\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]"),
]
_COMPACT_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_LABEL = _label_re("DATE", "DATED", "TARIKH", "DATUM", "ISSUED", "DATE OF ISSUE", "FECHA", "DATA", "DATO", "ДАТА",
                        "日付", "日期", "発行日", "开票日期")
_OTHER_DATE_LABEL = _label_re("DUE", "DELIVERY", "EXPIRY", "EXPIRES", "VALID", "PERIOD", "SHIP", "ORDER DATE", "PRINTED",
                              # the date of another document the line names: a contract, an agreement
                              "CONTRACT", "AGREEMENT", "VERTRAG", "CONTRATO", "CONTRAT", "ДОГОВІР", "ДОГОВОР")


def _date_text(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None and g not in "-/."]
    if match.re is _DATE_PATTERNS[0] or match.re is _DATE_PATTERNS[4]:
        return f"{groups[0]}-{groups[1]}-{groups[2]}"
    if match.re is _DATE_PATTERNS[1]:
        return f"{groups[0]}/{groups[1]}/{groups[2]}"
    return " ".join(groups)


def _looks_like_date(value: str) -> bool:
    return any(p.fullmatch(value) for p in _DATE_PATTERNS)


# A numeric date OCR read with letters for digits ("O5.03.2024", "l6/03/2024", "Dt: O6/O3/2O24"): O is 0, l and I are 1.
_OCR_DATE_SUSPECT = re.compile(r"[OIl][\d./-]|[\d./-][OIl]")
_OCR_DATE = re.compile(r"(?<![\w])(?=[\dOIl./-]*[OIl])(?=(?:[^\d]*\d){3})[\dOIl]{1,4}([./-])[\dOIl]{1,2}\1[\dOIl]{2,4}(?![\w])")

# Month names in the languages the labels cover (accents folded), read as the English month.
_FOREIGN_MONTHS = {
    name: month
    for month, names in enumerate([
        "janvier enero januar janner gennaio januari janeiro stycznia styczen января січня",
        "fevrier febrero februar febbraio februari fevereiro lutego luty февраля лютого",
        "mars marzo marz maart marco marca marzec марта березня",
        "avril abril aprile kwietnia kwiecien апреля квітня",
        "mai mayo maggio mei maio maja maj мая травня",
        "juin junio juni giugno junho czerwca czerwiec июня червня",
        "juillet julio juli luglio julho lipca lipiec июля липня",
        "aout agosto augustus sierpnia sierpien августа серпня",
        "septembre septiembre setiembre settembre setembro wrzesnia wrzesien сентября вересня",
        "octobre octubre oktober ottobre outubro pazdziernika pazdziernik октября жовтня",
        "novembre noviembre novembro listopada listopad ноября листопада",
        "decembre diciembre dezember dicembre dezembro grudnia grudzien декабря грудня",
    ], start=1)
    for name in names.split()
}
_YEAR_AND_WORD = re.compile(r"[^\W\d_]{3}.*(?<!\d)\d{4}(?!\d)")
_FOREIGN_DATE = re.compile(
    r"(?<!\d)(\d{1,2})\.?\s*(?:de\s+)?(" + "|".join(sorted(_FOREIGN_MONTHS, key=len, reverse=True)) + r")\.?,?\s*(?:del?\s+)?(\d{4})(?!\d)",
    re.I,
)


def _ocr_cut_day(raw: str, match: re.Match[str]) -> bool:
    """A one-digit day right after a letter ("l4/03/2026", "I4.03.2026"): OCR read a 1 as a letter, so the
    digit is half the day; reading it as the 4th would give a wrong date with no warning."""
    start = match.start()
    return match.re is _DATE_PATTERNS[1] and len(match.group(1)) == 1 and start > 0 and raw[start - 1].isalpha()


def _dates_in(line: Line, dayfirst: Optional[bool] = None) -> list[tuple[int, str]]:
    raw = line.raw
    if _OCR_DATE_SUSPECT.search(raw):  # same length: positions hold
        raw = _OCR_DATE.sub(lambda m: m.group(0).translate(_OCR_DIGITS), raw)
    found = []
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(raw):
            if _ocr_cut_day(raw, match):
                continue
            iso = normalize_date(_date_text(match), dayfirst=dayfirst if pattern is _DATE_PATTERNS[1] else None)
            if iso and 1990 <= int(iso[:4]) <= 2100:
                found.append((match.start(), iso))
    if not found and _YEAR_AND_WORD.search(raw):  # "2 avril 2024", "14. März 2026", "5 de marzo de 2026"
        folded = "".join(map(_fold_accent, raw))
        for match in _FOREIGN_DATE.finditer(folded):
            month = _FOREIGN_MONTHS[match.group(2).lower()]
            iso = normalize_date(f"{match.group(3)}-{month:02d}-{int(match.group(1)):02d}")
            if iso:
                found.append((match.start(), iso))
    if _DATE_LABEL.search(line.canon):
        for match in _COMPACT_DATE.finditer(line.raw):
            iso = normalize_date("-".join(match.groups()))
            if iso:
                found.append((match.start(), iso))
    return sorted(found)


_NUMERIC_DATE = re.compile(r"(?<![\d/.-])(\d{1,2})[-/.](\d{1,2})[-/.](?:\d{4}|\d{2})(?![\d])")


def _day_first(lines: list[Line], currency: Optional[str]) -> bool:
    """How the document orders an ambiguous numeric date ("03/08/2024"): as its unambiguous dates do
    ("14/03" day first, "03/14" month first), else month first in US dollars, day first anywhere else."""
    for line in lines:
        for match in _NUMERIC_DATE.finditer(line.raw):
            first, second = int(match.group(1)), int(match.group(2))
            if not (first and second) or max(first, second) > 31:  # not a date ("12.45.30" is a time)
                continue
            if first > 12 >= second:
                return True
            if second > 12 >= first:
                return False
    if currency != "USD":
        return True
    text = "\n".join(line.canon for line in lines)  # "$" alone is many countries' peso or dollar: US evidence first
    return not (_EXPLICIT_USD.search(text) or _COUNTRY_CUES_USD.search(text))


def _extract_date(lines: list[Line], dayfirst: Optional[bool] = None) -> Optional[str]:
    best: Optional[tuple[int, int, str]] = None
    for line in lines:
        dates = _dates_in(line, dayfirst)
        if not dates:
            continue
        others = [m.span() for m in _OTHER_DATE_LABEL.finditer(line.canon)]
        # A date label that is not part of another date's label ("DATE" in "ORDER DATE" is not the invoice's)
        labelled = next((m for m in _DATE_LABEL.finditer(line.canon)
                         if not any(start <= m.start() < end for start, end in others)), None)
        rank, chosen = (0 if not others else 2) if labelled else (2 if others else 1), dates[0][1]
        if labelled and others:
            # "Date: 01.02.2026  Due: 03.03.2026", "Order Date: 01/03/2026  Invoice Date: 14/03/2026": the date
            # the date label names is the first one after it
            after = [iso for position, iso in dates if position >= labelled.end()]
            rank, chosen = (0, after[0]) if after else (2, chosen)
        candidate = (rank, line.index, chosen)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        if rank == 0:
            break
    return best[2] if best else None


# --------------------------------------------------------------------------- currency

_SYMBOLS = [("E£", "EGP"), ("RD$", "DOP"), ("US$", "USD"), ("HK$", "HKD"), ("NZ$", "NZD"), ("MX$", "MXN"), ("Mex$", "MXN"), ("NT$", "TWD"), ("R$", "BRL"),
            ("S$", "SGD"), ("A$", "AUD"), ("C$", "CAD"), ("€", "EUR"), ("£", "GBP"), ("¥", "JPY"),
            ("₹", "INR"), ("円", "JPY"), ("元", "CNY"), ("₩", "KRW"), ("원", "KRW"), ("₱", "PHP"), ("฿", "THB"),
            ("₫", "VND"), ("₦", "NGN"), ("₪", "ILS"), ("₴", "UAH"), ("₺", "TRY"), ("₽", "RUB"), ("руб", "RUB"),
            ("zł", "PLN"), ("Kč", "CZK"), ("₾", "GEL"), ("ლარი", "GEL"), ("₸", "KZT"), ("৳", "BDT"), ("ج.م", "EGP"),
            ("บาท", "THB"), ("₮", "MNT"), ("₲", "PYG"), ("₡", "CRC"), ("₼", "AZN"), ("֏", "AMD"), ("៛", "KHR"),
            ("GH₵", "GHS"), ("₵", "GHS"), ("GH¢", "GHS"), ("د.أ", "JOD"), ("$", "USD")]
_ISO_RE = re.compile(r"(?<![A-Z])(" + "|".join(sorted(ISO_CURRENCIES)) + r")(?![A-Z])")
_RM_RE = re.compile(r"(?<![A-Z])RM(?![A-Z])")


def _own_word(text: str, match: re.Match[str]) -> bool:
    """A code is a word of its own in any script: "YİRMİBİN" holds no RM."""
    start, end = match.span()
    return not ((start and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha()))


# Currency marks that are letters, counted only touching an amount written with its cents ("Rs.210.00", "R31.99",
# "Rp 15.000,00"): a lone R or Rs elsewhere is a word or an initial.
_LETTER_MARKS = [(r"(?<![A-Za-z])(?:Rs\.?|RS\.)\s?(?=\d[\d,.]*[.,]\d{2}(?!\d))", "INR"),
                 (r"(?<![A-Za-z])R(?=\d[\d,.\s]*[.,]\d{2}(?!\d))", "ZAR"),
                 (r"(?<![A-Za-z])Rp\.?\s?(?=\d)", "IDR"),
                 (r"(?<![A-Za-z])RMB(?![A-Za-z])", "CNY"),
                 (r"(?<=\d)\s?Ft\b|(?<![A-Za-z])Ft\s?(?=\d)", "HUF"),
                 (r"(?<![A-Za-z])K[Ss]h\.?\s?(?=\d)|(?<=\d)\s?KSh\b", "KES"),
                 (r"(?<=\d)\s?(?:lei|LEI|RON)\b", "RON"),
                 (r"(?<=\d)\s?TL\b|(?<![A-Za-z])TL\s?(?=\d)|₺", "TRY"),
                 (r"(?<![A-Za-z])S/\.?\s?(?=\d)", "PEN"),
                 (r"(?<=\d)\s?(?:лв|ЛВ)\.?(?![^\W\d_])", "BGN"),
                 (r"(?<=\d)\s?(?:грн|ГРН)\.?(?![^\W\d_])", "UAH"),
                 (r"(?<=\d)\s?(?:din|DIN|дин|ДИН)\.?(?![^\W\d_])", "RSD"),
                 # after an amount's cents only: "6107 DH" is a Dutch postcode
                 (r"(?<=\d[.,]\d\d)\s?(?:DH|Dh|DHS|Dhs)\.?(?![^\W\d_])", "MAD"),
                 (r"(?<![A-Za-z])Tk\.?\s?(?=\d)|(?<=\d[.,]\d\d)\s?Tk\b", "BDT"),
                 (r"(?<=\d)\s?(?:đ|Đ|VNĐ|VNđ)(?![^\W\d_])", "VND"),
                 (r"(?<=\d)\s?(?:тг|ТГ|тенге)\.?(?![^\W\d_])", "KZT"),
                 (r"(?<=\d)\s?(?:Lek|LEK|Lekë|lekë)(?![^\W\d_])", "ALL"),
                 (r"(?<=\d)\s?(?:ден|ДЕН)\.?(?![^\W\d_])", "MKD"),
                 (r"(?<=\d)\s?(?:Riel|RIEL|riel)s?(?![^\W\d_])", "KHR"),
                 (r"(?<=\d[.,]\d\d)\s?DA(?![^\W\d_])", "DZD"),  # after cents only, as DH
                 (r"(?<=\d)\s?(?:Birr|BIRR|ብር)(?![^\W\d_])", "ETB"),
                 (r"(?<=\d)\s?(?:so'm|so‘m|SO'M|сўм|сум|СУМ)(?![^\W\d_])", "UZS"),
                 (r"(?<![A-Za-z])(?:Gs\.\s*|Gs\s?)(?=\d)|(?<=\d)\s?Gs\.?(?![^\W\d_])", "PYG")]
# One pass for all of them (a group per mark; they never start at the same place)
_LETTER_MARK_RE = re.compile("|".join(f"(?P<m{i}>{pattern})" for i, (pattern, _) in enumerate(_LETTER_MARKS)))
# Any of them beside a digit, loosely: the exact patterns above run only on the few lines where one may be
_LETTER_MARK_HINT = re.compile(r"R[sSp]?\.?\s?\d|K[Ss]h\.?\s?\d|Ft\s?\d|TL\s?\d|S/\.?\s?\d|\d\s?(?:Ft|KSh|lei|LEI|RON|TL)\b|RMB|₺"
                               r"|\d\s?(?:лв|ЛВ|грн|ГРН|din|DIN|дин|ДИН|DH|Dh|Tk|đ|Đ|VNĐ|тг|ТГ|тенге|Lek|LEK|lek|ден|ДЕН|Riel|RIEL|riel"
                               r"|DA|Birr|BIRR|ብር|so'm|so‘m|SO'M|сўм|сум|СУМ|Gs)|Tk\.?\s?\d|Gs\.?\s*\d")
_LETTER_MARK_CODES = {f"m{i}": code for i, (_, code) in enumerate(_LETTER_MARKS)}


# Codes that are also words or names: "TRY OUR APP", "PHP developer", "CAD drawings", "Sdn. Bhd." and
# "AEON CO. (M) BHD" (Malaysian companies, not Bahraini dinars). They count only written in capitals
# right beside an amount ("BHD 12.500", "12.500 BHD") or after a currency label ("Currency: CAD").
_AMBIGUOUS_CODES = frozenset({"TRY", "PHP", "CAD", "BHD"})


_CURRENCY_LABEL = re.compile(r"(?:CURRENCY|W[AÄ]HRUNG|DEVISE|MONNAIE|MONEDA|VALUTA|MATA\s+WANG)\s*[:=]?\s*(?:\(|$)", re.I)


def _beside_amount(raw: str, start: int, end: int) -> bool:
    """Written where a currency is stated: beside an amount, or after a currency label ("Currency: CAD"); not
    glued to an id's digits ("CUI: RO14506181" is a Romanian tax id, not Omani rials)."""
    return bool(re.match(r"\s*-?\d{1,7}(?:[,.\s]\d{3})*(?:[.,]\d+)?(?!\d)", raw[end:]) or re.search(r"\d\s*$", raw[:start])
                or _CURRENCY_LABEL.search(raw[max(0, start - 24):start]))


def _currencies_in(raw: str) -> list[str]:
    upper = raw.upper()
    found = [m.group(1) for m in _ISO_RE.finditer(upper)
             if _own_word(upper, m) and (m.group(1) not in _AMBIGUOUS_CODES
                                         or (raw[m.start():m.end()] == m.group(1) and _beside_amount(raw, m.start(), m.end())))]
    found += ["MYR" for m in _RM_RE.finditer(upper) if _own_word(upper, m)]
    if _LETTER_MARK_HINT.search(raw):
        found += [_LETTER_MARK_CODES[m.lastgroup] for m in _LETTER_MARK_RE.finditer(raw)]
    # Local dinar marks (KD, R.O., DT...) are short letter pairs: like the ambiguous codes, only beside an amount.
    found += [LOCAL_DINAR_MARKS[m.group(1).replace(".", "")] for m in LOCAL_DINAR_RE.finditer(raw)
              if _beside_amount(raw, m.start(), m.end())]
    rest = raw
    for symbol, code in _SYMBOLS:
        count = rest.count(symbol)
        found += [code] * count
        rest = rest.replace(symbol, " ")
    return found


def _currency_counts(lines: list[Line]) -> dict[str, int]:
    """How often the document names each currency (read once per document: the three-decimal mode and the
    currency field both start from it)."""
    counts: dict[str, int] = {}
    for line in lines:
        for code in _currencies_in(line.raw):
            counts[code] = counts.get(code, 0) + 1
    return counts


_US_STATES = ("AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
              "OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC").split()
# Where a document was issued, read from what only that country prints (tax and company ids, postcodes, the
# country's name): the currency when no mark names one, and which dollar a bare "$" is.
def _named(alternatives: str) -> re.Pattern[str]:
    """A country cue: one of ``alternatives`` as a word of its own in capitals."""
    return re.compile(rf"(?<![A-Z])(?:{alternatives})(?![A-Z])")


_COUNTRY_CUES = [
    (re.compile(r"(?<![A-Z])(?:ABN[\s:.]*\d{2}\s?\d{3}|(?:NSW|VIC|QLD|TAS)\s+\d{4}(?!\d)|AUSTRALIA)"), "AUD"),
    (re.compile(r"(?<![A-Z])(?:NEW ZEALAND|GST\s*(?:NO|#)[\s.:]*\d{2,3}-\d{3}-\d{3}(?!\d))"), "NZD"),
    (_named(r"CANADA|TPS|TVQ|(?:ON|QC|BC|AB|MB|NS|NB|SK|NL|PE)\s+[A-Z]\d[A-Z]\s?\d[A-Z]\d"), "CAD"),
    (_named(r"SINGAPORE|UEN"), "SGD"),
    (_named(r"MEXICO|RFC[\s:]*[A-Z&]{3,4}\d{6}(?:[A-Z\d]{3})?|CFDI|CDMX|CIUDAD DE MEXICO|GUADALAJARA|MONTERREY"), "MXN"),
    (_named(r"HONG KONG"), "HKD"),
    (re.compile(r"(?<![A-Z])(?:USA|U\.S\.A\.|UNITED STATES|(?:" + "|".join(_US_STATES) + r")\s+\d{5}(?:-\d{4})?(?!\d))"), "USD"),
    (re.compile(r"(?<![A-Z])(?:IBAN[\s:]*(?:DE|FR|IT|ES|NL|AT|BE|PT|IE|FI|LU|GR|SK|SI|EE|LV|LT|HR)\d{2}|P\.?\s?IVA|"
                r"PARTITA IVA|UST-?ID|USTIDNR|TVA INTRA|BTW[- ]?(?:NR|NUMMER)|DEUTSCHLAND|FRANCE|ITALIA|ESPANA|NEDERLAND|"
                r"OSTERREICH|BELGIQUE|BELGIE|PORTUGAL|IRELAND)(?![A-Z])"), "EUR"),
    (_named(r"VAT\s*(?:REG(?:ISTRATION)?\.?\s*)?(?:NO\.?|NUMBER)?[\s:]*GB\s?\d{3}|UNITED KINGDOM"), "GBP"),
    (_named(r"GSTIN|INDIA"), "INR"),
    (_named(r"NIP[\s:]*\d{3}-?\d{3}-?\d{2}-?\d{2}|POLSKA"), "PLN"),
    (_named(r"SCHWEIZ|SUISSE|SVIZZERA|CHE-\d{3}\.\d{3}\.\d{3}"), "CHF"),
    (_named(r"CNPJ|BRASIL|BRAZIL"), "BRL"),
    (_named(r"SOUTH AFRICA"), "ZAR"),
    (_named(r"R\.?U\.?T\.?[\s:]*\d{1,2}\.?\d{3}\.?\d{3}-[\dK]|CHILE"), "CLP"),
    (_named(r"NIT[\s:.]*\d{3}\.?\d{3}\.?\d{3}-\d|COLOMBIA"), "COP"),
    (_named(r"CUIT[\s:]*\d{2}-?\d{8}-?\d|ARGENTINA"), "ARS"),
    (_named(r"RUC[\s:]*(?:10|20)\d{9}|PERU"), "PEN"),
    (re.compile(r"統一編號|统一编号|TAIWAN|台北市|臺北市"), "TWD"),
    (_named(r"SVERIGE|SWEDEN|ORG\.?\s?NR[\s:.]*\d{6}-\d{4}"), "SEK"),
    (_named(r"NORGE|NORWAY|FORETAKSREGISTERET|\d{3}\s?\d{3}\s?\d{3}\s?MVA"), "NOK"),
    (_named(r"DANMARK|DENMARK|CVR[\s\-.:NR]*\d{8}"), "DKK"),
    (_named(r"MALAYSIA"), "MYR"),
    (_named(r"PHILIPPINES|MANILA|QUEZON CITY|MAKATI|CEBU CITY|VAT REG\.? TIN"), "PHP"),
    # Tax ids, countries and capitals that only one currency's documents print
    (re.compile(r"(?<![А-ЯЁ])(?:ИНН|РОССИЯ|МОСКВА|САНКТ-ПЕТЕРБУРГ)(?![А-ЯЁ])"), "RUB"),
    (re.compile(r"(?<![А-ЯЁІЇЄ])(?:ЄДРПОУ|ІПН|УКРАЇНА|КИЇВ)(?![А-ЯЁІЇЄ])"), "UAH"),
    (re.compile(r"(?<![А-ЯЁ])(?:БИН|ИИН|КАЗАХСТАН|АЛМАТЫ|АСТАНА)(?![А-ЯЁ])"), "KZT"),
    (re.compile(r"(?<![A-ZА-Я])(?:PIB[\s:]*\d{9}(?!\d)|ПИБ|SRBIJA|СРБИЈА|BEOGRAD|БЕОГРАД)(?![A-ZА-Я])"), "RSD"),
    (re.compile(r"(?<![A-Z])(?:OIB[\s:]*\d{11}(?!\d)|KMKR|EESTI|LIETUVA|LATVIJA|SLOVENIJA|ID ZA DDV|IC DPH|SLOVENSKO"
                r"|Α\.?Φ\.?Μ\.?|ΕΛΛΑΔΑ|ΑΘΗΝΑ)(?![A-Z])"), "EUR"),
    (_named(r"VKN|VERGI DAIRESI|TURKIYE|ISTANBUL|ANKARA"), "TRY"),
    (_named(r"CUI[\s:]*(?:RO)?\d{2,10}|ROMANIA|BUCURESTI"), "RON"),  # not CIF: Spain's tax id too
    (_named(r"ICELAND|REYKJAVIK|KT\.?[\s:]*\d{6}-?\d{4}"), "ISK"),  # not ISLAND: Long Island, Rhode Island
    (_named(r"MAROC|MOROCCO|CASABLANCA|RABAT|ICE[\s:]*\d{15}"), "MAD"),
    (re.compile(r"(?<![A-Z])(?:EGYPT|CAIRO)(?![A-Z])|مصر|القاهرة"), "EGP"),
    (_named(r"KENYA|NAIROBI|KRA PIN|M-PESA"), "KES"),
    (_named(r"NIGERIA|ABUJA"), "NGN"),  # not Lagos: a town in Portugal too
    (_named(r"PAKISTAN|KARACHI|LAHORE|ISLAMABAD|NTN[\s:#]*\d"), "PKR"),
    (_named(r"SRI LANKA|COLOMBO"), "LKR"),
    (_named(r"NEPAL|KATHMANDU"), "NPR"),
    (_named(r"BANGLADESH|DHAKA"), "BDT"),
    (_named(r"VIET ?NAM|HA NOI|HANOI|HO CHI MINH|MST[\s:]*\d{10}"), "VND"),  # a bare MST is also US time
    (re.compile(r"(?<![A-Z])(?:THAILAND|BANGKOK)(?![A-Z])|ประเทศไทย|กรุงเทพ"), "THB"),
    (re.compile(r"(?<![A-Z])TBILISI(?![A-Z])|საქართველო|თბილისი"), "GEL"),  # not GEORGIA: a US state too
    (re.compile(r"[\uac00-\ud7a3]{2}"), "KRW"),  # Hangul: only Korea writes it
    (re.compile(r"中国|中华人民共和国|北京|上海|广州|深圳|人民币"), "CNY"),
    (_named(r"AMSTERDAM|ROTTERDAM|PARIS|BERLIN|MUNCHEN|HAMBURG|MADRID|BARCELONA|ROMA|MILANO|WIEN|BRUXELLES|BRUSSEL"
            r"|LISBOA|HELSINKI|LUXEMBOURG"), "EUR"),
    (_named(r"ALGERIE|ALGERIA|ALGER"), "DZD"),
    (_named(r"GHANA|ACCRA"), "GHS"),
    (_named(r"ETHIOPIA|ADDIS ABABA"), "ETB"),
    (_named(r"UZBEKISTAN|O'ZBEKISTON|TOSHKENT|TASHKENT"), "UZS"),
    (_named(r"BOLIVIA|BOLIVIANOS|COCHABAMBA"), "BOB"),
    (_named(r"PARAGUAY|ASUNCION"), "PYG"),
]
_DOLLARS = frozenset({"AUD", "NZD", "CAD", "SGD", "MXN", "HKD", "CLP", "COP", "ARS", "TWD"})  # countries writing "$"
_KANA = re.compile(r"[\u3040-\u30ff円]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def _country_currency(lines: list[Line]) -> Optional[str]:
    counts: dict[str, int] = {}
    for line in lines:
        for pattern, code in _COUNTRY_CUES:
            if pattern.search(line.canon):
                counts[code] = counts.get(code, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    if not ranked or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None  # no cue, or two countries as often: no guess
    return ranked[0][0]


_COUNTRY_CUES_USD = next(pattern for pattern, code in _COUNTRY_CUES if code == "USD")
_EXPLICIT_USD = re.compile(r"USD|US\$")  # the US dollar named, not a bare "$"
_EXPLICIT_INR = re.compile(r"INR|₹")  # the Indian rupee named, not a bare "Rs"
_RUPEES = frozenset({"PKR", "LKR", "NPR"})  # countries writing "Rs" besides India


def _extract_currency(lines: list[Line], total_index: Optional[int], counts: dict[str, int]) -> Optional[str]:
    """The currency on the total's line, else the one the document names most; a bare "$" is the dollar of the
    country the document comes from, "¥" on a Chinese document is the yuan; with no mark at all, the country's."""
    found = None
    if total_index is not None and total_index >= 0:
        for line in lines[total_index : total_index + 2]:
            on_total = _currencies_in(line.raw)
            if on_total:
                found = on_total[0]
                break
    if found is None and counts:
        found = max(counts, key=lambda c: counts[c])
    if found in ("USD", "JPY"):  # "$" and "¥" are written by more than one country, and "Rs" (below)
        text = "\n".join(line.raw for line in lines)
        if found == "USD" and not _EXPLICIT_USD.search(text):
            cue = _country_currency(lines)
            return cue if cue in _DOLLARS else found
        if found == "JPY" and "¥" in text and not _KANA.search(text) and _HAN.search(text):
            return "CNY"
    if found == "INR" and not _EXPLICIT_INR.search("\n".join(line.raw for line in lines)):  # "Rs" is more than India's
        cue = _country_currency(lines)
        return cue if cue in _RUPEES else found
    if found is None and total_index is not None:  # nothing priced (a delivery note): no currency to name
        return _country_currency(lines)
    return found


# --------------------------------------------------------------------------- vendor

_LEGAL_SUFFIX = re.compile(
    r"(?<![A-Z])(?:SDN\.?\s*B[HN]D\.?|BHD\.?|S/B|LTD\.?|LIMITED|GMBH|INC\.?|LLC|L\.L\.C\.|CORP\.?|CORPORATION|SARL|"
    r"S\.?A\.?R\.?L\.?|SAS|S\.A\.S\.?|S\.A\.?|B\.?V\.?|N\.?V\.?|AG|PLC|LLP|K\.K\.|CO\.?,? LTD\.?|PTE\.?|PTY\.?|E\.K\.|(?<=[A-Z.] )KG|OY|AB|"
    r"S\.P\.A\.?|S\.R\.L\.?|LTDA\.?|S\.L\.|COMPANY|CO\.)(?![A-Z])(?!\s*\.?\s*(?:REG|NO\b|NUMBER|ID\b|:))"
)
_HEADER_END = re.compile(
    r"(?<![A-Z])(?:INVOICE|RECEIPT|CASH BILL|CASH SALES?|BILL TO|SOLD TO|SHIP TO|DELIVER|OWNED BY|CUSTOMER|"
    # the addressee in other languages: below it is the customer, not the issuer
    r"SPETT\.?LE|SPETTABILE|DESTINATARIO|CLIENTE|KUNDE|NABYWCA|ACHETEUR|AFNEMER|购买方|购方|"
    r"DIMILIKI|DATE)(?![A-Z])"
)
_BUSINESS_WORD = re.compile(
    r"(?<![A-Z])(?:ENTERPRISE|ENTERPRISES|TRADING|RESTAURANT|RESTORAN|MART|MARKET|MINIMARKET|SUPERMARKET|STORE|"
    r"STORES|SHOP|CAFE|CAFÉ|KOPITIAM|HARDWARE|BAKERY|PHARMACY|STATIONERY|BOOKS?|HOTEL|SUPPLIES|SUPPLY|SERVICES?|"
    r"HOLDINGS|INDUSTRIES|ELECTRICAL|MACHINERY|GALLERY|KITCHEN|FOOD|FOODS|BISTRO|PERNIAGAAN|SYARIKAT|TRADERS?|"
    r"STATION|CENTRE|CENTER|GROUP|INTERNATIONAL|CONSULTING|LOGISTICS|SOLUTIONS|WORKS|PRINT|GROCER|DELI|BAR|PUB|"
    # shops in other languages (the canonical form: capitals, accents folded)
    r"SUPERMERCADO|HIPERMERCADO|MERCADO|SUPERMARCHE|HYPERMARCHE|HYPERMARKET|EPICERIE|BOULANGERIE|PATISSERIE|"
    r"BACKEREI|KONDITOREI|METZGEREI|APOTHEKE|DROGERIE|PHARMACIE|FARMACIA|PANADERIA|TIENDA|PIZZERIA|TRATTORIA|"
    r"RISTORANTE|CAFETERIA|COFFEE|ESPRESSO|ROASTERS?|KIOSK)"
    r"(?![A-Z])"
)
_VENDOR_LABEL = re.compile(
    r"^\s*(?:VENDOR|SUPPLIER|SELLER|MERCHANT|COMPANY|ISSUED BY|BILLED BY|SOLD BY|FROM|STORE|SHOP|"
    # the seller in other languages: German, French, Spanish (and Mexican CFDI), Italian, Dutch, Polish, Chinese,
    # Czech and Slovak, Ukrainian, Russian, Romanian, Hungarian, Portuguese, Nordic, Turkish, Balkan, Greek, Arabic
    r"VERKAUFER|LIEFERANT|FOURNISSEUR|VENDEUR|PROVEEDOR|EMISOR|VENDEDOR|FORNITORE|CEDENTE|LEVERANCIER|VERKOPER|"
    r"SPRZEDAWCA|销售方(?:信息)?|销方|卖方|DODAVATEL|ПОСТАЧАЛЬНИК|ПРОДАВЕЦЬ|ПОСТАВЩИК|ПРОДАВЕЦ|FURNIZOR|ELADO|SZALLITO|"
    r"FORNECEDOR|EMITENTE|LEVERANTOR|MYYJA|SATICI|DOBAVLJAC|PRODAVATELJ|ΠΡΟΜΗΘΕΥΤΗΣ|ΕΚΔΟΤΗΣ|البائع|المورد)"
    r"(?:\s*NAME)?(?:\s*[:\-：]+\s*|\s*$)"  # "Sprzedawca:", or a block's title alone ("销售方信息")
)
# The name's own label on the line under a seller's block title ("名称：广州市明辉…", "Name: ...", "Nazwa: ...")
_NAME_LABEL = re.compile(r"\s*(?:名称|NAME|NAZWA|NAZEV|NOM|NOMBRE|RAZON SOCIAL|FIRMA|НАЗВА|НАИМЕНОВАНИЕ)\s*[:：]\s*")
_NOT_VENDOR = re.compile(
    r"(?<![A-Z])(?:TAX INVOICE|INVOICE|RECEIPT|CASH BILL|BILL|WELCOME|THANK|TEL|PHONE|FAX|EMAIL|E-MAIL|WWW|HTTP|"
    r"GST|VAT|SST|REG|REGISTRATION|CO\.? ?NO|COMPANY NO|ROC|BRN|DATE|TIME|CASHIER|TABLE|ORDER|DOCUMENT|QUOTATION|STATEMENT|"
    r"BILL TO|SHIP TO|CUSTOMER|PAGE|COPY|ORIGINAL|MEMBER|OPEN|HOURS|"
    # the document's type in other languages: a title, not who issued it
    r"CREDIT NOTE|FACTURE|FACTURA|FATTURA|FATURA|FAKTURA|RECHNUNG|GUTSCHRIFT|FACTUUR|NOTA FISCAL|BELEG|QUITTUNG|"
    r"KVITTO|PARAGON|RECIBO|RICEVUTA)(?![A-Z])"
    r"|請\s*求\s*書|領\s*収\s*書|领\s*收\s*书|发\s*票|發\s*票|收\s*据|收\s*據|영\s*수\s*증|견\s*적\s*서|レシート"
)
_ADDRESS_HINT = re.compile(
    r"(?<![A-Z])(?:JALAN|JLN|LORONG|TAMAN|LOT|BLOK|BLOCK|FLOOR|SUITE|STREET|ST\.|ROAD|RD\.?|AVENUE|AVE\.?|LANE|"
    r"BOULEVARD|DRIVE|STRASSE|STRAßE|STR\.|WEG|ALLEE|PLATZ|RUE|PLACE|STRAAT|LAAN|GRACHT|PLEIN|VIA|P\.?O\.? BOX|"
    r"NO\.?\s*\d|KAWASAN|BANDAR|PERSIARAN|SELANGOR|JOHOR|KUALA LUMPUR|MALAYSIA)(?![A-Z])"
)
# A name that starts with a number glued to a word ("7-Eleven"); "12 Main St" is an address.
_NUMBER_NAME = re.compile(r"\d{1,2}-[A-Za-z]{3,}(?![\w])")
_WEIGHED = re.compile(rf"\d\s?(?:{_UNITS})(?![A-Za-z])", re.I)  # "340g", "1 kg", "2L", "6pk" (not lengths: "3M")
_PRICED = re.compile(r"\d[.,]\d{2}\s*$")  # a line that ends with an amount in cents: an item, a total
_BRANCH_ID = re.compile(r"\s*(?:STORE|SHOP|BRANCH|OUTLET|UNIT|STATION|LOCATION)\s*(?:NO\.?|NR\.?|#|:)?\s*\d+\s*$")
_REGISTRATION = re.compile(r"\s*[\(\[][^()\[\]]*\d[^()\[\]]*[\)\]]\s*$")
_TRAILING_REG_NO = re.compile(r"\s+[A-Z]{0,3}\d{5,}[-\s.]?[A-Z]?(?:\s*\([A-Z]{1,5}\))?$")


def _strip_registration(text: str) -> str:
    """'ACME SDN BHD (123456-X)', 'ACME S/B 273500-U (KSB)' → the name without its registration number."""
    previous = None
    while previous != text:
        previous = text
        text = _REGISTRATION.sub("", text)
        text = _TRAILING_REG_NO.sub("", text).rstrip()
    return text


def _vendor_cells(line: Line) -> list[tuple[str, str]]:
    """(raw, canon) of each cell of a line split on column gaps and ' · ' separators, registrations removed."""
    cells = []
    for match in re.finditer(r"[^·|]+?(?=\s{3,}|\s·\s|\||$)", line.raw):
        raw = _strip_registration(match.group(0).strip())
        if raw:
            canon = line.canon[match.start() : match.start() + len(match.group(0))].strip()[: len(raw)]
            cells.append((raw, canon))
    return cells


def _vendor_score(raw: str, canon: str, first_line: bool = False) -> int:
    """3: legal suffix; 2: business word; 1: a plausible name line; 0: not a vendor.

    ``first_line``: the document's first line, where a name with a street word in it and no
    number ("Little Lane Espresso") is the issuer's name, not its address.
    """
    letters = sum(ch.isalpha() for ch in raw)
    if letters < 2 or letters < 0.5 * len(raw.replace(" ", "")):
        return 0
    if "@" in raw or re.search(r"\d{3}[\s-]?\d{3,}", raw) or re.search(r":\s*\S", raw):
        return 0
    if _WEIGHED.search(raw):  # "Café Britt 340g", "Yerba Mate 1kg": a product, however its name reads
        return 0
    suffix = _LEGAL_SUFFIX.search(canon)
    if _NOT_VENDOR.search(canon) and not suffix:
        return 0
    if _total_tier(canon) and _amounts(raw):  # "Total PLN 300.00": the amount due, not who asks for it
        return 0
    if _ADDRESS_HINT.search(canon) and not suffix and not (first_line and not re.search(r"\d", raw)):
        return 0
    # A leading number is a quantity ("1  Carne vacuna kg") unless a legal form follows ("KG" may be a weight).
    if re.match(r"^\d", raw.strip()) and (not suffix or suffix.group(0) == "KG") and not _NUMBER_NAME.match(raw.strip()):
        return 0
    if _BRANCH_ID.match(canon):  # "Store #1289", "Shop 1012": which branch, not whose
        return 0
    if suffix:  # "... KG" may be a weight ("POMMES GALA KG"): worth a business word, not a legal form
        return 2 if suffix.group(0) == "KG" else 3
    return 2 if _BUSINESS_WORD.search(canon) else 1


# A document's title run into the name by a flattened layout ("... QUINDÍO S.A.S.FACTURA ELECTRÓNICA DE VENTA")
_GLUED_TITLE = re.compile(r"\s*(?:TAX INVOICE|INVOICE|RECEIPT|FACTURA|FACTURE|FATTURA|FATURA|FAKTURA|RECHNUNG|BOLETA"
                          r"|NOTA FISCAL|TIQUETE)(?![A-Z]).*$")


def _without_glued_title(value: str) -> str:
    """The name without a title that follows its legal form ("S.A.S.FACTURA ..."); a title inside a name
    ("Invoice Services Ltd") stays."""
    canon = _canon(value)
    for title in _GLUED_TITLE.finditer(canon):
        head = canon[: title.start()].rstrip()
        if head and any(suffix.end() == len(head) for suffix in _LEGAL_SUFFIX.finditer(head)):
            return value[: title.start()].rstrip()
    return value


def _clean_vendor(value: str) -> Optional[str]:
    value = _without_glued_title(_strip_registration(value))
    value = re.sub(r"^[#*\s\-:|]+|[\s:|*,;]+$", "", value)
    value = " ".join(value.split())
    return value or None


def _continues_previous(raw: str, canon: str) -> bool:
    """A name's second line: it starts with the legal suffix, '(', '&' or ')' closes a bracket opened above."""
    suffix = _LEGAL_SUFFIX.search(canon)
    head = canon[: suffix.start()].strip() if suffix else canon
    if suffix and not re.search(r"[A-Z]{2,}", head.replace("(M)", "")):
        return True
    if suffix and len(head.split()) == 1 and not re.search(r"[a-z]", raw):  # 'STATIONERY SDN BHD' under 'WESTERN EASTERN'
        return True
    return bool(re.match(r"^\s*[(&)]", raw)) or raw.count(")") > raw.count("(")


def _joined_name(lines: list[Line], index: int, raw: str, canon: str) -> str:
    if index > 0 and _continues_previous(raw, canon):
        above = _vendor_cells(lines[index - 1])
        above_ok = above and not re.search(r"[a-z]", above[0][0]) and not _LEGAL_SUFFIX.search(above[0][1])
        if above_ok and (_vendor_score(*above[0]) or re.search(r"(?:&|\bAND|-|\()$", above[0][0])):
            raw = f"{above[0][0]} {raw}"
    if re.search(r"(?:&|\bAND|-)$", raw.strip(), re.I) and index + 1 < len(lines):
        raw = f"{raw.strip()} {_strip_registration(lines[index + 1].raw.strip())}"
    return raw


_COLUMN_LABEL = re.compile(r"[^\W\d_][^\W\d_ .'-]*(?:[ .'-]+[^\W\d_]+){0,3}\s*:")  # "Nabywca:", "Bill to:"
_EMAIL_ADDRESS = re.compile(r"\s*<[^<>\s]+@[^<>\s]+>|\s*\S+@\S+\.\w+")


def _extract_vendor(lines: list[Line]) -> Optional[str]:
    for line in lines[:40]:
        match = _VENDOR_LABEL.match(line.canon)
        if not match:
            continue
        named, start = line, match.end()
        # "Sprzedawca:" above the name, or beside the buyer's label, each heading its column ("Sprzedawca:
        # Nabywca:"): the name is the next line's, in the first column
        rest = line.raw[start:].strip()
        if (not rest or _COLUMN_LABEL.fullmatch(rest)) and line.index + 1 < len(lines):
            named, start = lines[line.index + 1], 0
            name_label = _NAME_LABEL.match(named.canon)
            if name_label and not rest:
                start = name_label.end()
            cells = _vendor_cells(named)
            if rest and cells:
                value = _clean_vendor(_EMAIL_ADDRESS.sub("", cells[0][0]))
                if value and _vendor_score(value, cells[0][1][: len(value)]):
                    return value
                continue
        if not re.match(r"\s*(?:ADDRESS|REG|NO|ID|TAX|VAT|GST)\b", named.canon[start:]):
            value = _strip_registration(_EMAIL_ADDRESS.sub("", named.raw[start:]).strip())  # "From: Shop <a@b.c>"
            if _vendor_score(value, named.canon[start:].strip()[: len(value)]):
                return _clean_vendor(value)
    # The header ends at its closing label, or at the first priced line: an issuer is named above what it sells.
    header_end = next((i for i, line in enumerate(lines[:12]) if _HEADER_END.search(line.canon) or _PRICED.search(line.raw)), 12)
    header = lines[:header_end] if any(_vendor_cells(l) and _vendor_score(*_vendor_cells(l)[0], first_line=l.index == 0)
                                       for l in lines[:header_end]) else lines[:12]
    scored: list[tuple[int, int, str, str]] = []
    for position, line in enumerate(header):
        for raw, canon in _vendor_cells(line)[:1]:
            score = _vendor_score(raw, canon, first_line=position == 0)
            if score:
                scored.append((score, position, raw, canon))
    if not scored:
        return None
    top = max(score for score, *_ in scored)
    score, position, raw, canon = min((s for s in scored if s[0] == top), key=lambda s: s[1])
    if top == 1 and position > 3:  # a plain line far from the top is more likely a customer than the issuer
        score, position, raw, canon = min(scored, key=lambda s: s[1])
    return _clean_vendor(_joined_name(lines, position, raw, canon))


# --------------------------------------------------------------------------- line items

_ITEMS_HEADER = _label_re("DESCRIPTION", "ITEM", "ITEMS", "QTY", "QUANTITY", "PRODUCT", "ARTICLE", "PARTICULARS", "POS")
# Where the table ends: the first summary line (subtotal, net, total, amount due), in the languages the total
# labels cover. Column names that also head tables ("Betrag", "Montant", "Summe", "Importe") are left out.
_STOP_ITEMS = _label_re(
    "SUBTOTAL", "SUB TOTAL", "TOTAL", "NET AMOUNT", "GRAND TOTAL", "AMOUNT DUE", "BALANCE DUE", "NETT",
    "AMOUNT PAYABLE", "TOTAL PAYABLE", "ZWISCHENSUMME", "CASH", "CHANGE", "ROUNDING", "TOTAAL", "SUBTOTAAL",
    "TE BETALEN", "GESAMT", "GESAMTBETRAG", "NETTOBETRAG", "ENDBETRAG", "RECHNUNGSBETRAG", "TOTAL HT", "TOTAL TTC",
    "MONTANT HT", "MONTANT TTC", "NET A PAYER", "BASE IMPONIBLE", "IMPORTE TOTAL", "IMPONIBILE", "TOTALE", "TOTALT",
    "I ALT", "YHTEENSA", "RAZEM", "SUMA", "CELKEM", "TOPLAM", "ИТОГО", "ВСЕГО", "ОБЩО", "РАЗОМ", "ВСЬОГО", "UKUPNO",
    "УКУПНО", "SKUPAJ", "SPOLU", "CELKOM", "KOKKU", "SAMTALS", "合計", "合计",
    "小計", "小计", "总计",
    "總計", "합계",
)
_SKIP_ITEM = _label_re(
    "DATE", "TIME", "TEL", "PHONE", "FAX", "INVOICE NO", "RECEIPT", "CASHIER", "GST", "VAT", "TAX", "DISCOUNT",
    "IBAN", "EMAIL", "DUE", "REG", "MWST", "UST", "TVA", "IVA", "BTW", "HST", "PST", "QST", "MOMS", "ALV", "KDV",
    "НДС", "消費税", "消费税", "税额", "税額", "부가세",
)
_TRAILING_CURRENCY = re.compile(r"[\s(]+(?:RM|US\$|S\$|A\$|C\$|[$€£¥₹]|" + "|".join(sorted(ISO_CURRENCIES)) + r")\.?$")
_DISCOUNT = _label_re("DISCOUNT", "DISC", "REBATE", "COUPON", "VOUCHER", "RABATT", "REMISE")
_LINE_PREFIX = re.compile(r"^\s*(?:(?:LINE|ITEM|POS\.?)\s*\d+\s*[:.)]?|\d{1,3}[.)]?\s{2,}|\d{1,3}\s+(?=[A-Za-z]))\s*", re.I)


def _close(a: float, b: float, tolerance: float = 0.011) -> bool:
    return abs(a - b) <= tolerance


def _parse_item(raw: str, pending: Optional[str], integers: bool) -> Optional[tuple[LineItem, bool]]:
    """A LineItem from one table row, and whether it used the pending description line above."""
    numbers = _amounts(raw)
    if not numbers or not (numbers[-1].decimal or integers):
        return None
    amount = numbers[-1]
    quantity = unit = None
    first_used = amount
    for q_i, u_i in ((-3, -2), (-2, -3)):
        if len(numbers) >= 3:
            q, u = numbers[q_i], numbers[u_i]
            if q.value and _close(q.value * u.value, amount.value, 0.011 + 0.005 * q.value):
                quantity, unit = q.value, u.value
                first_used = min(q, u, key=lambda a: a.start)
                break
    if quantity is None and len(numbers) >= 2 and numbers[-2].value:
        other = numbers[-2]
        if _close(other.value, amount.value):
            quantity, unit, first_used = 1.0, other.value, other
    description = raw[: first_used.start]
    description = re.sub(r"\b(?:qty|unit price|price|amount)\b|[|]", " ", description, flags=re.I)
    description = _LINE_PREFIX.sub("", description)
    description = re.sub(r"[\s:x×*@]+$", "", description, flags=re.I).strip(" -:|(\u2212")
    description = _TRAILING_CURRENCY.sub("", description)  # "Freight charges KWD 250.500": the mark is the amount's
    used_pending = False
    if sum(ch.isalpha() for ch in description) < 2:
        if not pending:
            return None
        description, used_pending = pending, True
    if amount.value == 0:  # a free line adds nothing; a negative one (discount, refund, credit) does
        return None
    return LineItem(description=" ".join(description.split()), quantity=quantity, unit_price=unit, amount=amount.value), used_pending


def _items_header(line: Line) -> bool:
    """A table's column names ("Description  Qty  Unit Price  Total"): a header word and no amount."""
    return bool(_ITEMS_HEADER.search(line.canon)) and not _amounts(line.raw, allow_integers=False)


def _item_region(lines: list[Line], stop: int) -> list[Line]:
    start = 0
    for line in lines[:stop]:
        if _items_header(line):
            start = line.index + 1
    return lines[start:stop]


def _extract_items(lines: list[Line], integers: bool) -> list[LineItem]:
    # The table ends at its first summary line; a "Total" column name in its header is not one.
    stop = next((line.index for line in lines if _STOP_ITEMS.search(line.canon) and not _items_header(line)), len(lines))
    items: list[LineItem] = []
    pending: Optional[str] = None
    for line in _item_region(lines, stop):
        parsed = None
        if _SKIP_ITEM.search(line.canon):
            # A discount written as a credit ("Discount -1.00") is a line of the bill; other labelled lines are not.
            parsed = _parse_item(line.raw, None, integers) if _DISCOUNT.search(line.canon) else None
            if parsed is None or (parsed[0].amount or 0) >= 0:
                pending = None
                continue
        parsed = parsed or _parse_item(line.raw, pending, integers)
        if parsed is None:
            text = line.raw.strip()
            pending = text if sum(ch.isalpha() for ch in text) >= 3 else pending
            continue
        items.append(parsed[0])
        pending = None
    return items


def _reconciled(items: list[LineItem], total: Optional[float], tax: Optional[float]) -> list[LineItem]:
    if not items or total is None:
        return []
    lines_sum = sum(item.amount or 0.0 for item in items)
    # Lines priced with the tax add up to the total; lines priced without it, to the total less the tax.
    if _close(lines_sum, total, 0.02) or (tax is not None and _close(lines_sum + tax, total, 0.02)):
        return items
    return []


# --------------------------------------------------------------------------- entry point


def _extract(text: str, part: bool = False) -> InvoiceExtraction:
    lines = _lines(text)
    if not lines:
        return InvoiceExtraction()
    counts = _currency_counts(lines)
    token = _THREE_DECIMAL_CURRENCY.set(_three_decimal_currency(counts))
    try:
        return _extract_lines(lines, part, counts)
    finally:
        _THREE_DECIMAL_CURRENCY.reset(token)


def _three_decimal_currency(counts: dict[str, int]) -> Optional[str]:
    """The document's currency when it is one with three minor digits (KWD, BHD...): the one named most
    often, ahead of any other (a Gulf invoice may quote a rate or a USD equivalent beside its dinars)."""
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][0] not in THREE_DECIMAL_CURRENCIES or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def _extract_lines(lines: list[Line], part: bool, counts: dict[str, int]) -> InvoiceExtraction:
    integers = not _uses_decimals(lines)
    candidates = _total_candidates(lines, integers)
    credit_note = any(_CREDIT_TITLE.search(line.canon) for line in lines[:15])
    chosen = _choose_total(candidates, _cash_minus_change(lines, integers), credit_note)
    total = chosen.value if chosen else None
    tax_limit = chosen.index if chosen and chosen.index >= 0 else len(lines)
    tax = _extract_tax(lines, tax_limit, total, integers)
    items = _extract_items(lines, integers)
    if not part:
        items = _reconciled(items, total, tax)
    elif integers:  # no total confirms a part's items: a bare whole number ("within 7 days") is not one
        items = [item for item in items if item.quantity is not None]
    currency = _extract_currency(lines, chosen.index if chosen else None, counts)
    return InvoiceExtraction(
        vendor=_extract_vendor(lines),
        invoice_number=_extract_number(lines),
        date=_extract_date(lines, _day_first(lines, currency)),
        currency=currency,
        total=total,
        tax=tax,
        line_items=items,
    )


def extract_invoice(text: str) -> InvoiceExtraction:
    """Fields of one invoice or receipt from its text; ``None`` for anything not found. Never raises."""
    return _safely(text, part=False)


def extract_invoice_part(text: str) -> InvoiceExtraction:
    """Fields of one part of a long invoice (``invoice_part_extraction``): its line items are reported
    even when no total in the part confirms them, because the total is usually in another part;
    the chain's reconcile step checks the merged items against the document's total instead."""
    return _safely(text, part=True)


def _safely(text: object, part: bool) -> InvoiceExtraction:
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        return _extract(str(text) if text is not None else "", part=part)
    except Exception:  # noqa: BLE001 - a cost-0 model must answer, even on input it cannot read
        return InvoiceExtraction()
