"""Seeded synthetic invoices with exact ground truth and labelled PII.

Why it exists: the template needs documents to run on without anyone's real invoices,
and every model (rules, local, hosted) needs something to be scored against. Each
generated invoice carries the clean :class:`InvoiceExtraction` it was printed from and
the character span of every piece of personal data printed on it, so extraction
accuracy and PII redaction can both be measured exactly.

Variety is deliberate: five layouts, eight locales (currency, tax, date and number
conventions, phone and IBAN formats), 1-8 line items (on request dozens or hundreds, for
long multi-page invoices), optional notes and terms, and OCR-style noise in a share of
documents. Noise touches labels and descriptive text, never PII, and key values only
rarely, so the truth stays the true value as with real OCR.

Determinism: one ``random.Random(str(seed))`` drives everything, so the same seed gives
byte-identical documents on every machine and Python version.
"""

from __future__ import annotations

import random
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Optional

from pydantic import BaseModel

from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem

PiiKind = Literal["person_name", "email", "phone", "iban", "address", "card_number", "national_id"]
PII_KINDS: tuple[str, ...] = ("person_name", "email", "phone", "iban", "address")
# Planted only when asked (``identifiers=True``), so documents of existing seeds stay byte-identical.
IDENTIFIER_KINDS: tuple[str, ...] = ("card_number", "national_id")
LAYOUTS: tuple[str, ...] = ("classic", "receipt", "european", "keyvalue", "markdown")


class PiiSpan(BaseModel):
    kind: PiiKind
    value: str
    start: int
    end: int


class GeneratedInvoice(BaseModel):
    id: str
    text: str
    truth: InvoiceExtraction
    pii: list[PiiSpan]
    layout: str
    noisy: bool


# --------------------------------------------------------------------------- locales


@dataclass(frozen=True)
class Locale:
    code: str
    currency: str
    decimals: int
    suffixes: tuple[str, ...]
    tax_label: str
    tax_rates: tuple[str, ...]  # percent strings, "0" = tax-free
    number_style: str  # "en" 1,234.50 | "eu" 1.234,50 | "ch" 1'234.50
    date_formats: tuple[str, ...]
    currency_marks: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[tuple[str, str], ...]  # (city, postcode pattern: 9 digit, A letter)
    iban_countries: tuple[str, ...]
    layouts: tuple[str, ...]


LOCALES: tuple[Locale, ...] = (
    Locale(
        "US", "USD", 2, ("Inc.", "LLC", "Corp.", "Co."), "Sales Tax", ("0", "6.25", "7", "8.875"), "en",
        ("long", "iso", "short_us"), ("$", "USD", "US$"),
        ("James", "Maria", "Robert", "Linda", "Michael", "Ashley", "David", "Keisha", "Carlos", "Emily"),
        ("Johnson", "Garcia", "Miller", "Davis", "Rodriguez", "Walker", "Nguyen", "Patel", "Brooks", "Sullivan"),
        ("Maple Avenue", "Oak Street", "Sunset Boulevard", "Elm Drive", "Lakeview Road", "Pine Court"),
        (("Springfield, IL", "99999"), ("Portland, OR", "99999"), ("Austin, TX", "99999"), ("Albany, NY", "99999")),
        ("DE", "GB", "NL"), ("classic", "receipt", "keyvalue", "markdown"),
    ),
    Locale(
        "UK", "GBP", 2, ("Ltd", "Limited", "PLC", "LLP"), "VAT", ("20", "5", "0"), "en",
        ("dmy_slash", "dmy_abbr", "dmy_long"), ("£", "GBP"),
        ("Oliver", "Amelia", "Harry", "Isla", "George", "Priya", "Callum", "Siobhan", "Thomas", "Grace"),
        ("Smith", "Jones", "Taylor", "Evans", "Wright", "Khan", "MacLeod", "Hughes", "Ahmed", "Clarke"),
        ("High Street", "Station Road", "Church Lane", "Victoria Road", "Mill Lane", "Queens Walk"),
        (("Leeds", "AA9 9AA"), ("Bristol", "AA9 9AA"), ("York", "AA9 9AA"), ("Cardiff", "AA9 9AA")),
        ("GB",), ("classic", "receipt", "keyvalue", "markdown"),
    ),
    Locale(
        "DE", "EUR", 2, ("GmbH", "AG", "GmbH & Co. KG", "e.K."), "MwSt", ("19", "7"), "eu",
        ("dmy_dot", "iso"), ("€", "EUR"),
        ("Lukas", "Anna", "Jonas", "Lea", "Felix", "Sophie", "Maximilian", "Hannah", "Paul", "Emma"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Schäfer", "Koch", "Richter"),
        ("Hauptstraße", "Bahnhofstraße", "Gartenweg", "Lindenallee", "Schillerstraße", "Am Markt"),
        (("Berlin", "99999"), ("München", "99999"), ("Köln", "99999"), ("Leipzig", "99999")),
        ("DE",), ("european", "classic", "keyvalue", "receipt"),
    ),
    Locale(
        "FR", "EUR", 2, ("SARL", "SAS", "S.A."), "TVA", ("20", "10", "5.5"), "eu",
        ("dmy_slash", "dmy_dot"), ("€", "EUR"),
        ("Camille", "Louis", "Chloé", "Hugo", "Manon", "Arthur", "Léa", "Jules", "Inès", "Gabriel"),
        ("Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Roux", "Fournier", "Bonnet"),
        ("rue de la République", "avenue Victor Hugo", "boulevard Voltaire", "rue des Lilas", "place du Marché"),
        (("Lyon", "99999"), ("Nantes", "99999"), ("Lille", "99999"), ("Bordeaux", "99999")),
        ("FR",), ("european", "classic", "markdown"),
    ),
    Locale(
        "NL", "EUR", 2, ("B.V.", "N.V.", "V.O.F."), "BTW", ("21", "9"), "eu",
        ("dmy_dash", "dmy_dot", "iso"), ("€", "EUR"),
        ("Daan", "Sanne", "Bram", "Fleur", "Lars", "Noor", "Jesse", "Eva", "Thijs", "Lotte"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder"),
        ("Kerkstraat", "Dorpsstraat", "Molenweg", "Stationsplein", "Prinsengracht", "Beukenlaan"),
        (("Utrecht", "9999 AA"), ("Rotterdam", "9999 AA"), ("Groningen", "9999 AA"), ("Delft", "9999 AA")),
        ("NL",), ("european", "keyvalue", "markdown"),
    ),
    Locale(
        "CH", "CHF", 2, ("AG", "GmbH", "SA", "Sàrl"), "MWST", ("8.1", "2.6"), "ch",
        ("dmy_dot",), ("CHF",),
        ("Luca", "Mia", "Noah", "Lina", "Elias", "Laura", "Nico", "Alina", "Simon", "Chiara"),
        ("Meier", "Keller", "Brunner", "Gerber", "Frei", "Baumann", "Rossi", "Favre", "Huber", "Zimmermann"),
        ("Bahnhofstrasse", "Seestrasse", "Dorfstrasse", "Rue du Lac", "Via Cantonale", "Bergweg"),
        (("Zürich", "9999"), ("Bern", "9999"), ("Basel", "9999"), ("Lausanne", "9999")),
        ("CH",), ("european", "classic", "receipt"),
    ),
    Locale(
        "MY", "MYR", 2, ("Sdn Bhd", "Sdn. Bhd.", "Enterprise", "Trading"), "SST", ("6", "8", "0"), "en",
        ("dmy_slash", "dmy_dash", "dmy_abbr"), ("RM", "MYR"),
        ("Ahmad", "Siti", "Wei Ling", "Kumar", "Nurul", "Chee Keong", "Farah", "Raj", "Mei Yee", "Hafiz"),
        ("bin Ismail", "binti Hassan", "Tan", "Lim", "a/l Subramaniam", "Wong", "Chong", "Abdullah", "Lee", "Ng"),
        ("Jalan Ampang", "Jalan Bukit Bintang", "Jalan Tun Razak", "Lorong Maarof", "Jalan Sultan Ismail"),
        (("Kuala Lumpur", "99999"), ("Petaling Jaya", "99999"), ("Johor Bahru", "99999"), ("Shah Alam", "99999")),
        ("GB", "DE"), ("receipt", "classic", "keyvalue"),
    ),
    Locale(
        "JP", "JPY", 0, ("K.K.", "Co., Ltd.", "G.K."), "Consumption Tax", ("10", "8"), "en",
        ("iso", "ymd_slash"), ("¥", "JPY"),
        ("Haruto", "Yui", "Sota", "Hina", "Ren", "Aoi", "Yuto", "Sakura", "Kenji", "Mio"),
        ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura", "Kobayashi", "Kato"),
        ("Chuo-dori", "Sakura-machi", "Midori-cho", "Kita-ku Honcho", "Minami-Aoyama"),
        (("Tokyo", "999-9999"), ("Osaka", "999-9999"), ("Kyoto", "999-9999"), ("Sapporo", "999-9999")),
        ("DE", "NL"), ("classic", "receipt", "markdown", "keyvalue"),
    ),
)

VENDOR_STEMS = (
    "Northwind", "Bluefin", "Harbourlight", "Kestrel", "Alpenblick", "Lumière", "Copperleaf", "Sakura Bridge",
    "Tanjung Mas", "Greenfield", "Ironbark", "Silverline", "Redwood", "Oakhaven", "Brightwater", "Stonegate",
    "Meridian", "Blue Heron", "Golden Lotus", "Falkenrot", "Vanderwal", "Polaris", "Juniper", "Cedar & Sage",
    "Maple Leaf", "Seri Murni", "Kirin Hill", "Westbrook", "Atlas", "Helios", "Nordlicht", "Riverstone",
)
VENDOR_TRADES = (
    "Trading", "Supplies", "Consulting", "Logistics", "Print Works", "Hardware", "Café", "Bakery", "Electrical",
    "Office Solutions", "Software", "Engineering", "Catering", "Stationery", "Garden Centre", "Mini Market",
)
ITEMS = {
    "services": (
        ("Consulting services", "hour"), ("Software licence (annual)", "unit"), ("On-site support", "hour"),
        ("Data migration", "unit"), ("Project management", "hour"), ("Training workshop", "day"),
        ("Cloud hosting - monthly plan", "unit"), ("Website maintenance", "hour"), ("Translation services", "page"),
    ),
    "goods": (
        ("A4 copy paper, 500 sheets", "unit"), ("Printer toner cartridge", "unit"), ("LED desk lamp", "unit"),
        ("Ergonomic office chair", "unit"), ("USB-C cable 2m", "unit"), ("Stapler, heavy duty", "unit"),
        ("Cordless drill 18V", "unit"), ("Masking tape 48mm", "unit"), ("Extension cord 5m", "unit"),
        ("Whiteboard markers (set of 4)", "unit"), ("Safety gloves, pair", "unit"), ("Shipping boxes, large", "unit"),
    ),
    "food": (
        ("Flat white", "unit"), ("Nasi lemak special", "unit"), ("Croissant", "unit"), ("Iced lemon tea", "unit"),
        ("Chicken rice", "unit"), ("Sourdough loaf", "unit"), ("Mineral water 500ml", "unit"), ("Green salad", "unit"),
        ("Espresso", "unit"), ("Curry puff", "unit"), ("Cheesecake slice", "unit"), ("Roti canai", "unit"),
    ),
}
NOTES = (
    "Thank you for your business. Please include the invoice number with your payment.",
    "Payment is due within 30 days of the invoice date. Late payments may incur interest at 1.5% per month.",
    "Goods remain the property of the seller until paid in full. Claims for damaged goods must be made within 7 days.",
    "All prices are shown in the stated currency. Bank charges are the responsibility of the payer.",
    "This invoice was prepared electronically and is valid without a signature.",
    "For questions about this invoice please contact our accounts team, quoting the reference above.",
    "Services were delivered in accordance with the framework agreement and the statement of work.",
    "Please note our new bank details below and update your records accordingly.",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
IBAN_BBAN = {  # country → (BBAN pattern: 9 digit, A letter, X alphanumeric)
    "DE": "999999999999999999",
    "GB": "AAAA99999999999999",
    "NL": "AAAA9999999999",
    "FR": "99999999999999999999999",
    "CH": "99999999999999999",
}


# --------------------------------------------------------------------------- small helpers


def _pattern(rng: random.Random, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "9":
            out.append(rng.choice(string.digits))
        elif ch == "A":
            out.append(rng.choice(string.ascii_uppercase))
        else:
            out.append(ch)
    return "".join(out)


def iban_check_digits(country: str, bban: str) -> str:
    """The two ISO 13616 check digits that make ``country + check + bban`` pass mod-97."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{98 - number % 97:02d}"


def iban_is_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban(rng: random.Random, country: str) -> str:
    bban = _pattern(rng, IBAN_BBAN[country])
    compact = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def _money(value: Decimal, decimals: int, style: str) -> str:
    text = f"{value:,.{decimals}f}"
    if style == "eu":
        return text.replace(",", "_").replace(".", ",").replace("_", ".")
    if style == "ch":
        return text.replace(",", "'")
    if style == "plain":
        return text.replace(",", "")
    return text


def _q(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _format_date(day: date, fmt: str) -> str:
    month = MONTHS[day.month - 1]
    return {
        "iso": day.isoformat(),
        "long": f"{month} {day.day}, {day.year}",
        "short_us": f"{month[:3]} {day.day}, {day.year}",
        "dmy_slash": f"{day.day:02d}/{day.month:02d}/{day.year}",
        "dmy_dot": f"{day.day:02d}.{day.month:02d}.{day.year}",
        "dmy_dash": f"{day.day:02d}-{day.month:02d}-{day.year}",
        "dmy_abbr": f"{day.day} {month[:3]} {day.year}",
        "dmy_long": f"{day.day} {month} {day.year}",
        "ymd_slash": f"{day.year}/{day.month:02d}/{day.day:02d}",
    }[fmt]


def _invoice_number(rng: random.Random, day: date) -> str:
    n = rng.randint(1, 99999)
    kind = rng.randrange(7)
    if kind == 0:
        return f"INV-{day.year}-{n % 10000:04d}"
    if kind == 1:
        return f"F{day.year}/{n:05d}"
    if kind == 2:
        return f"{rng.randint(1000, 99999)}"
    if kind == 3:
        return f"RE-{day.year % 100:02d}-{n:05d}"
    if kind == 4:
        return f"{rng.choice('ABCS')}-{n:06d}"
    if kind == 5:
        return f"CS{n:08d}"
    return f"{day.year}{day.month:02d}-{n % 1000:03d}"


def _phone(rng: random.Random, locale: str) -> str:
    d = lambda k: _pattern(rng, "9" * k)  # noqa: E731
    formats = {
        "US": (f"({d(3)}) 555-{d(4)}", f"+1 {d(3)}-555-{d(4)}", f"{d(3)}.555.{d(4)}"),
        "UK": (f"+44 20 7946 {d(4)}", f"020 7946 {d(4)}", f"07700 900{d(3)}"),
        "DE": (f"+49 30 {d(8)}", f"030 {d(4)} {d(4)}", f"+49 (0)89 {d(3)} {d(4)}"),
        "FR": (f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"01 {d(2)} {d(2)} {d(2)} {d(2)}"),
        "NL": (f"+31 20 {d(3)} {d(4)}", f"06-{d(8)}"),
        "CH": (f"+41 44 {d(3)} {d(2)} {d(2)}", f"044 {d(3)} {d(2)} {d(2)}"),
        "MY": (f"03-{d(4)} {d(4)}", f"+60 12-{d(3)} {d(4)}", f"016-{d(7)}"),
        "JP": (f"03-{d(4)}-{d(4)}", f"+81 6-{d(4)}-{d(4)}"),
    }
    return rng.choice(formats[locale])


def _address(rng: random.Random, loc: Locale) -> tuple[str, str]:
    """(street line, city line) in the locale's order."""
    number = str(rng.randint(1, 240))
    street = rng.choice(loc.streets)
    city, postcode_pattern = rng.choice(loc.cities)
    postcode = _pattern(rng, postcode_pattern)
    if loc.code in {"DE", "NL", "CH"}:
        return f"{street} {number}", f"{postcode} {city}"
    if loc.code == "FR":
        return f"{number} {street}", f"{postcode} {city}"
    if loc.code == "UK":
        return f"{number} {street}", f"{city} {postcode}"
    if loc.code == "MY":
        return f"No. {number}, {street}", f"{postcode} {city}"
    if loc.code == "JP":
        return f"{number}-{rng.randint(1, 30)} {street}", f"{city} {postcode}"
    return f"{number} {street}", f"{city} {postcode}"


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.replace("ß", "ss")).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum() or ch in ".-")


# --------------------------------------------------------------------------- document assembly


@dataclass
class _Segment:
    text: str
    kind: Optional[str] = None  # PII kind, never noised
    key: bool = False  # a key value: noised only rarely


@dataclass
class _Doc:
    segments: list[_Segment] = field(default_factory=list)

    def add(self, text: str, kind: Optional[str] = None, key: bool = False) -> "_Doc":
        self.segments.append(_Segment(text, kind, key))
        return self

    def line(self, *parts: "str | _Segment") -> "_Doc":
        for part in parts:
            self.segments.append(part if isinstance(part, _Segment) else _Segment(part))
        self.segments.append(_Segment("\n"))
        return self


def _pii(text: str, kind: str) -> _Segment:
    return _Segment(text, kind)


def _key(text: str) -> _Segment:
    return _Segment(text, key=True)


_CONFUSIONS = {"O": "0", "0": "O", "l": "1", "1": "l", "I": "l", "S": "5", "5": "S", "B": "8", "8": "B",
               "e": "c", "i": "l", "o": "0"}


def _noise(rng: random.Random, text: str, rate: float) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        roll = rng.random()
        if ch == "\n":
            out.append(ch)
        elif text.startswith("m", i) and roll < rate:
            out.append("rn")
        elif text.startswith("rn", i) and roll < rate:
            out.append("m")
            i += 1
        elif ch in _CONFUSIONS and roll < rate:
            out.append(_CONFUSIONS[ch])
        elif ch == " " and roll < rate:
            out.append("" if rng.random() < 0.5 else "  ")
        elif roll > 1 - rate / 3:
            out.append(ch + rng.choice(".,'`:;"))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _render(doc: _Doc, rng: random.Random, noisy: bool) -> tuple[str, list[PiiSpan]]:
    text_parts: list[str] = []
    spans: list[PiiSpan] = []
    position = 0
    broken_line_done = not noisy or rng.random() < 0.5
    for seg in doc.segments:
        piece = seg.text
        if noisy and seg.kind is None and piece.strip():
            if not seg.key:
                piece = _noise(rng, piece, 0.04)
                if not broken_line_done and len(piece) > 25 and " " in piece[5:-5]:
                    cut = piece.index(" ", len(piece) // 2) if " " in piece[len(piece) // 2 :] else -1
                    if cut > 0:
                        piece = piece[:cut] + "\n" + piece[cut + 1 :]
                        broken_line_done = True
            elif rng.random() < 0.03:
                piece = _noise(rng, piece, 0.15)
        if seg.kind is not None:
            spans.append(PiiSpan(kind=seg.kind, value=piece, start=position, end=position + len(piece)))
        text_parts.append(piece)
        position += len(piece)
    return "".join(text_parts), spans


# --------------------------------------------------------------------------- one invoice


@dataclass
class _Facts:
    loc: Locale
    vendor: str
    vendor_street: str
    vendor_city: str
    number: str
    day: date
    date_text: str
    person: str
    email: str
    phone: str
    street: str
    city: str
    iban: str
    items: list[tuple[str, Decimal, Decimal, Decimal]]  # description, qty, unit, amount
    subtotal: Decimal
    tax_rate: str
    tax: Optional[Decimal]
    total: Decimal
    currency_mark: str
    money_style: str
    notes: list[str]

    def money(self, value: Decimal) -> str:
        return _money(value, self.loc.decimals, self.money_style)

    @property
    def decimals(self) -> int:
        return self.loc.decimals

    def qty(self, value: Decimal) -> str:
        return f"{value:f}".rstrip("0").rstrip(".") if "." in f"{value:f}" else f"{value:f}"

    def with_mark(self, value: Decimal, after: bool = False) -> str:
        amount = self.money(value)
        mark = self.currency_mark
        if after or (mark in {"€"} and self.money_style == "eu"):
            return f"{amount} {mark}"
        joiner = "" if mark in {"$", "£", "¥", "US$"} else " "
        return f"{mark}{joiner}{amount}"


def _facts(rng: random.Random, loc: Locale, layout: str, line_items: Optional[tuple[int, int]] = None) -> _Facts:
    stem = rng.choice(VENDOR_STEMS)
    suffix = rng.choice(loc.suffixes)
    trade = rng.choice(VENDOR_TRADES) if rng.random() < 0.6 and suffix not in VENDOR_TRADES else ""
    vendor = " ".join(part for part in (stem, trade, suffix) if part)
    if layout == "receipt" and rng.random() < 0.5:
        vendor = vendor.upper()
    vendor_street, vendor_city = _address(rng, loc)
    day = date(2024, 1, 1) + timedelta(days=rng.randrange(3 * 365))
    date_fmt = "dmy_dot" if layout == "european" and rng.random() < 0.7 else rng.choice(loc.date_formats)
    first, last = rng.choice(loc.first_names), rng.choice(loc.last_names)
    person = f"{first} {last}"
    email = f"{_ascii(first)}.{_ascii(last.split()[-1])}@{rng.choice(EMAIL_DOMAINS)}"
    street, city = _address(rng, loc)
    category = "food" if layout == "receipt" and rng.random() < 0.6 else rng.choice(("services", "goods", "goods"))
    if line_items is None:
        n_items = rng.randint(1, 8) if layout != "receipt" else rng.randint(1, 6)
        lines = rng.sample(ITEMS[category], min(n_items, len(ITEMS[category])))
    else:
        lines = _long_item_lines(rng, category, rng.randint(*line_items))
    items = []
    for desc, unit_kind in lines:
        if unit_kind == "hour" and rng.random() < 0.5:
            qty = Decimal(rng.choice(("0.5", "1.5", "2.5", "7.5", "12")))
        else:
            qty = Decimal(rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 10, 12)))
        scale = {"food": 8, "goods": 60, "services": 150}[category]
        if loc.decimals == 0:
            unit = Decimal(rng.randint(1, 40) * 10 * max(1, scale // 8))
        else:
            unit = _q(Decimal(str(rng.uniform(0.5, 1.0) * scale * rng.choice((0.3, 1, 1, 2.5)))), 2)
            if loc.code in {"CH"} or (category == "food" and rng.random() < 0.5):
                unit = _q(unit * 20, 0) / 20  # 0.05 steps
                unit = _q(unit, 2)
        amount = _q(qty * unit, loc.decimals)
        items.append((desc.upper() if layout == "receipt" else desc, qty, unit, amount))
    subtotal = sum((a for *_, a in items), Decimal(0))
    tax_rate = rng.choice(loc.tax_rates)
    if tax_rate == "0" and rng.random() < 0.6:
        tax: Optional[Decimal] = None
    else:
        tax = _q(subtotal * Decimal(tax_rate) / 100, loc.decimals)
    total = _q(subtotal + (tax or 0), loc.decimals)
    style = loc.number_style
    if layout == "european" and style == "en":
        style = "eu"
    if layout in {"keyvalue", "markdown"} and rng.random() < 0.4:
        style = "plain" if style == "en" else style
    mark = rng.choice(loc.currency_marks)
    n_notes = rng.choice((0, 0, 1, 2, 4, 6)) if layout != "receipt" else rng.choice((0, 1))
    return _Facts(
        loc=loc, vendor=vendor, vendor_street=vendor_street, vendor_city=vendor_city,
        number=_invoice_number(rng, day), day=day, date_text=_format_date(day, date_fmt), person=person,
        email=email, phone=_phone(rng, loc.code), street=street, city=city,
        iban=_iban(rng, rng.choice(loc.iban_countries)), items=items, subtotal=subtotal, tax_rate=tax_rate,
        tax=tax, total=total, currency_mark=mark, money_style=style,
        notes=rng.sample(NOTES, n_notes),
    )


_SITES = ("north", "south", "east", "west", "central", "harbour", "airport", "river", "hill", "park")
_SITE_LETTERS = string.ascii_uppercase.replace("X", "")  # a trailing "x" reads as a quantity sign ("2 x")
_SITE_CODES = tuple(a + b for a in _SITE_LETTERS for b in _SITE_LETTERS if a + b != "RM")  # RM: ringgit


def _long_item_lines(rng: random.Random, category: str, count: int) -> list[tuple[str, str]]:
    """``count`` billed lines for a multi-page invoice: the category's items, each for a named site and cost
    code ("Data migration, north site CQ"), so no two lines read alike and none adds a number to parse."""
    codes = rng.sample(_SITE_CODES, count)
    return [(f"{desc}, {rng.choice(_SITES)} site {code}", unit_kind)
            for (desc, unit_kind), code in zip((rng.choice(ITEMS[category]) for _ in range(count)), codes)]


def _tax_label(f: _Facts) -> str:
    rate = f.tax_rate.replace(".", ",") if f.money_style == "eu" else f.tax_rate
    return f"{f.loc.tax_label} {rate}%"


def _classic(rng: random.Random, f: _Facts) -> _Doc:
    doc = _Doc()
    doc.line(_key(f.vendor))
    doc.line(_pii(f.vendor_street + ", " + f.vendor_city, "address"))
    if rng.random() < 0.4:
        doc.line("Tel: ", _pii(_phone(rng, f.loc.code), "phone"))
    doc.line()
    doc.line(rng.choice(("INVOICE", "TAX INVOICE", "Invoice")))
    doc.line(rng.choice(("Invoice No: ", "Invoice #: ", "Invoice Number: ")), _key(f.number))
    doc.line(rng.choice(("Date: ", "Invoice Date: ", "Issue date: ")), _key(f.date_text))
    if rng.random() < 0.5:
        doc.line("Due Date: ", _format_date(f.day + timedelta(days=30), "iso" if "-" in f.date_text[:5] else "dmy_abbr"))
    doc.line()
    doc.line(rng.choice(("Bill To:", "Billed to:", "Customer:")))
    doc.line(_pii(f.person, "person_name"))
    doc.line(_pii(f.street + ", " + f.city, "address"))
    doc.line("Email: ", _pii(f.email, "email"))
    doc.line("Phone: ", _pii(f.phone, "phone"))
    doc.line()
    doc.line(f"{'Description':<34}{'Qty':>6}{'Unit Price':>14}{'Amount':>14}")
    for desc, qty, unit, amount in f.items:
        doc.line(f"{desc:<34}{f.qty(qty):>6}{f.money(unit):>14}", _key(f"{f.money(amount):>14}"))
    doc.line()
    doc.line(f"{'Subtotal:':>54}", _key(f"{f.money(f.subtotal):>14}"))
    if f.tax is not None:
        doc.line(f"{_tax_label(f) + ':':>54}", _key(f"{f.money(f.tax):>14}"))
    label = rng.choice(("Total:", "TOTAL DUE:", "Amount Due:", "Grand Total:", "Balance Due:"))
    doc.line(f"{label:>40} ", _key(f.with_mark(f.total)))
    doc.line()
    doc.line("Payment by bank transfer to IBAN ", _pii(f.iban, "iban"))
    for note in f.notes:
        doc.line(note)
    return doc


def _receipt(rng: random.Random, f: _Facts) -> _Doc:
    doc = _Doc()
    width = 32
    doc.line(_key(f.vendor))
    doc.line(_pii(f.vendor_street, "address"))
    doc.line(_pii(f.vendor_city, "address"))
    doc.line("TEL: ", _pii(f.phone, "phone"))
    doc.line(rng.choice(("RECEIPT", "CASH BILL", "SIMPLIFIED TAX INVOICE", "TAX INVOICE")))
    doc.line(rng.choice(("Receipt No: ", "RECEIPT#: ", "Bill No: ", "DOC NO: ")), _key(f.number))
    doc.line(rng.choice(("Date: ", "DATE: ", "")), _key(f.date_text), f"  {rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}")
    doc.line("Cashier: ", _pii(f.person, "person_name"))
    doc.line("-" * width)
    for desc, qty, unit, amount in f.items:
        if qty == 1 and rng.random() < 0.5:
            doc.line(f"{desc:<22}", _key(f"{f.money(amount):>10}"))
        else:
            doc.line(desc)
            doc.line(f"  {f.qty(qty)} x {f.money(unit)}".ljust(22), _key(f"{f.money(amount):>10}"))
    doc.line("-" * width)
    doc.line(f"{'SUBTOTAL':<22}", _key(f"{f.money(f.subtotal):>10}"))
    if f.tax is not None:
        doc.line(f"{_tax_label(f).upper():<22}", _key(f"{f.money(f.tax):>10}"))
    mark = f.currency_mark
    doc.line(f"{rng.choice(('TOTAL', 'TOTAL', 'NETT TOTAL', 'GRAND TOTAL'))} {mark}".ljust(22), _key(f"{f.money(f.total):>10}"))
    if rng.random() < 0.7:
        step = Decimal(rng.choice((10, 20, 50, 100))) * (100 if f.decimals == 0 else 1)
        cash = (f.total // step + 1) * step
        doc.line(f"{'CASH':<22}{f.money(cash):>10}")
        doc.line(f"{'CHANGE':<22}{f.money(cash - f.total):>10}")
    else:
        doc.line(f"{'CARD':<22}{f.money(f.total):>10}")
    doc.line("-" * width)
    doc.line("Member: ", _pii(f.email, "email"))
    doc.line("Deliver to: ", _pii(f.street + ", " + f.city, "address"))
    doc.line("Refunds to IBAN: ", _pii(f.iban, "iban"))
    for note in f.notes:
        doc.line(note)
    doc.line(rng.choice(("THANK YOU, PLEASE COME AGAIN", "GOODS SOLD ARE NOT RETURNABLE", "Thank you!")))
    return doc


def _european(rng: random.Random, f: _Facts) -> _Doc:
    doc = _Doc()
    doc.line(_key(f.vendor), " · ", _pii(f.vendor_street, "address"), " · ", _pii(f.vendor_city, "address"))
    doc.line(f"VAT ID: {f.loc.code if f.loc.code != 'CH' else 'CHE-'}{_pattern(rng, '999999999')}")
    doc.line()
    doc.line(_pii(f.person, "person_name"))
    doc.line(_pii(f.street, "address"))
    doc.line(_pii(f.city, "address"))
    doc.line()
    title = {"DE": "Rechnung / Invoice", "FR": "Facture / Invoice", "NL": "Factuur / Invoice"}.get(f.loc.code, "Invoice")
    doc.line(title)
    doc.line(rng.choice(("Invoice No.: ", "Invoice no. ", "No. ")), _key(f.number),
             "    Date: ", _key(f.date_text))
    doc.line("Customer contact: ", _pii(f.email, "email"), " / ", _pii(f.phone, "phone"))
    doc.line()
    doc.line("Pos. Description                          Qty     Unit price       Amount")
    for pos, (desc, qty, unit, amount) in enumerate(f.items, 1):
        doc.line(f"{pos:>3}  {desc:<34}{f.qty(qty).replace('.', ','):>5}{f.money(unit):>15}", _key(f"{f.money(amount):>13}"))
    doc.line()
    doc.line(f"{'Net amount':<57}", _key(f"{f.money(f.subtotal):>13}"))
    if f.tax is not None:
        doc.line(f"{'VAT ' + _tax_label(f).split()[-1]:<57}", _key(f"{f.money(f.tax):>13}"))
    doc.line(f"{'Total ' + f.loc.currency:<57}", _key(f"{f.money(f.total):>13}"))
    doc.line()
    doc.line("Please transfer the amount to IBAN ", _pii(f.iban, "iban"), f" stating invoice no. {f.number}.")
    for note in f.notes:
        doc.line(note)
    return doc


def _keyvalue(rng: random.Random, f: _Facts) -> _Doc:
    doc = _Doc()
    doc.line("Document type: invoice")
    doc.line("Vendor: ", _key(f.vendor))
    doc.line("Vendor address: ", _pii(f"{f.vendor_street}, {f.vendor_city}", "address"))
    doc.line(rng.choice(("Invoice number: ", "Invoice No: ", "Invoice ref: ")), _key(f.number))
    doc.line(rng.choice(("Issue date: ", "Date: ", "Invoice date: ")), _key(f.date_text))
    doc.line("Customer name: ", _pii(f.person, "person_name"))
    doc.line("Customer email: ", _pii(f.email, "email"))
    doc.line("Customer phone: ", _pii(f.phone, "phone"))
    doc.line("Customer address: ", _pii(f"{f.street}, {f.city}", "address"))
    doc.line("Currency: ", f.loc.currency)
    for i, (desc, qty, unit, amount) in enumerate(f.items, 1):
        doc.line(f"Line {i}: {desc} | qty {f.qty(qty)} | unit price {f.money(unit)} | amount ", _key(f.money(amount)))
    doc.line("Subtotal: ", _key(f.money(f.subtotal)))
    if f.tax is not None:
        doc.line(f"Tax ({_tax_label(f)}): ", _key(f.money(f.tax)))
    doc.line(rng.choice(("Total: ", "Total due: ", "Amount due: ")), _key(f.money(f.total)))
    doc.line("Payment IBAN: ", _pii(f.iban, "iban"))
    if f.notes:
        doc.line("Notes: ", " ".join(f.notes))
    return doc


def _markdown(rng: random.Random, f: _Facts) -> _Doc:
    doc = _Doc()
    doc.line("# ", _key(f.vendor))
    doc.line(_pii(f"{f.vendor_street}, {f.vendor_city}", "address"))
    doc.line()
    doc.line("## Invoice ", _key(f.number))
    doc.line()
    doc.line("**Date:** ", _key(f.date_text))
    doc.line("**Customer:** ", _pii(f.person, "person_name"), " <", _pii(f.email, "email"), ">")
    doc.line("**Phone:** ", _pii(f.phone, "phone"))
    doc.line("**Ship to:** ", _pii(f"{f.street}, {f.city}", "address"))
    doc.line()
    doc.line(f"| # | Description | Qty | Unit price ({f.loc.currency}) | Amount ({f.loc.currency}) |")
    doc.line("|---|---|---:|---:|---:|")
    for i, (desc, qty, unit, amount) in enumerate(f.items, 1):
        doc.line(f"| {i} | {desc} | {f.qty(qty)} | {f.money(unit)} | ", _key(f.money(amount)), " |")
    doc.line("| | | | Subtotal | ", _key(f.money(f.subtotal)), " |")
    if f.tax is not None:
        doc.line(f"| | | | {_tax_label(f)} | ", _key(f.money(f.tax)), " |")
    doc.line("| | | | **Total** | **", _key(f.money(f.total)), "** |")
    doc.line()
    doc.line("Bank transfer: IBAN ", _pii(f.iban, "iban"))
    if f.notes:
        doc.line()
        doc.line("### Terms")
        for note in f.notes:
            doc.line("- ", note)
    return doc


# --------------------------------------------------------------------------- card numbers and national IDs


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` pass the Luhn check (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


_CARD_BRANDS = (  # (prefixes, length, grouping)
    (("4",), 16, (4, 4, 4, 4)),
    (("51", "52", "53", "54", "55", "2221", "2720"), 16, (4, 4, 4, 4)),
    (("34", "37"), 15, (4, 6, 5)),
    (("6011", "65"), 16, (4, 4, 4, 4)),
    (("3528", "3589"), 16, (4, 4, 4, 4)),
)
_CARD_LABELS = ("Card: ", "Card number: ", "Paid by card ", "VISA/MC: ", "Credit card no. ", "Kartennummer: ",
                "Carte bancaire : ", "CC#: ", "Charged to card ")


def _card_number(rng: random.Random) -> str:
    prefixes, length, grouping = rng.choice(_CARD_BRANDS)
    body = rng.choice(prefixes)
    body += _pattern(rng, "9" * (length - 1 - len(body)))
    number = body + luhn_check_digit(body)
    joiner = rng.choice((" ", " ", "-", ""))
    parts, at = [], 0
    for size in grouping:
        parts.append(number[at : at + size])
        at += size
    return joiner.join(parts)


def _steuer_id(rng: random.Random) -> str:
    """German tax ID: 10 digits with exactly one digit twice, then an ISO 7064 MOD 11,10 check digit."""
    digits = rng.sample(string.digits, 9)
    digits.insert(rng.randrange(1, 10), rng.choice(digits))
    if digits[0] == "0":
        digits[0], digits[1] = digits[1], digits[0]
    if digits[0] == "0":  # the doubled digit was 0 and sat at both ends
        return _steuer_id(rng)
    product = 10
    for ch in digits:
        total = (int(ch) + product) % 10 or 10
        product = total * 2 % 11
    number = "".join(digits) + str((11 - product) % 10)
    return number if rng.random() < 0.5 else f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"


def _national_id(rng: random.Random, locale: str) -> str:
    d = lambda k: _pattern(rng, "9" * k)  # noqa: E731
    if locale == "US":
        area = rng.choice([n for n in range(1, 900) if n != 666])
        return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    if locale == "UK":
        first, second = rng.choice("ABCEGHJKLMNOPRSTWXYZ"), rng.choice("ABCEGHJKLMNPRSTWXYZ")
        if first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            first = "A"
        body, suffix = d(6), rng.choice("ABCD")
        return f"{first}{second} {body[:2]} {body[2:4]} {body[4:]} {suffix}" if rng.random() < 0.6 else first + second + body + suffix
    if locale == "DE":
        return _steuer_id(rng)
    if locale == "FR":
        head = f"{rng.choice('12')}{d(2)}{rng.randint(1, 12):02d}{rng.choice([n for n in range(1, 96) if n != 20]):02d}"
        head += f"{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}"
        key = f"{97 - int(head) % 97:02d}"
        if rng.random() < 0.6:
            return f"{head[0]} {head[1:3]} {head[3:5]} {head[5:7]} {head[7:10]} {head[10:13]} {key}"
        return head + key
    if locale == "NL":
        while True:
            body = str(rng.randint(1, 9)) + d(7)
            check = sum(int(ch) * w for ch, w in zip(body, range(9, 1, -1))) % 11
            if check < 10:
                number = body + str(check)
                return number if rng.random() < 0.6 else f"{number[:4]}.{number[4:6]}.{number[6:]}"
    if locale == "CH":
        body = "756" + d(9)
        check = (10 - sum(int(ch) * (3 if i % 2 else 1) for i, ch in enumerate(body)) % 10) % 10
        number = body + str(check)
        return f"{number[:3]}.{number[3:7]}.{number[7:11]}.{number[11:]}"
    if locale == "MY":
        born = date(1950, 1, 1) + timedelta(days=rng.randrange(20000))
        number = f"{born:%y%m%d}{rng.randint(1, 16):02d}{d(4)}"
        return f"{number[:6]}-{number[6:8]}-{number[8:]}" if rng.random() < 0.7 else number
    if locale == "JP":
        body = d(11)
        remainder = sum(int(ch) * (n + 1 if n <= 6 else n - 5) for n, ch in enumerate(reversed(body), 1)) % 11
        number = body + str(0 if remainder <= 1 else 11 - remainder)
        return f"{number[:4]} {number[4:8]} {number[8:]}" if rng.random() < 0.6 else number
    raise ValueError(f"no national ID format for locale {locale!r}")


_NATIONAL_ID_LABELS = {
    "US": ("SSN: ", "Social Security No.: ", "Customer SSN: "),
    "UK": ("NI number: ", "National Insurance No: ", "NINO: "),
    "DE": ("Steuer-ID: ", "Steuerliche IdNr.: ", "Tax ID (IdNr): "),
    "FR": ("N° de sécurité sociale : ", "NIR: ", "Numéro INSEE : "),
    "NL": ("BSN: ", "Burgerservicenummer: ", "Citizen service no. (BSN): "),
    "CH": ("AHV-Nr.: ", "AVS: ", "Social security no.: "),
    "MY": ("NRIC: ", "IC No: ", "MyKad: "),
    "JP": ("My Number: ", "Individual Number: ", "Kojin bango: "),
}


def _insert_line_after(text: str, spans: list[PiiSpan], kind: str, line: str, value: PiiSpan) -> str:
    """``line`` (whose PII ``value`` is given at offsets within the line) after the line holding the first
    span of ``kind``; later spans shift, so every span still points at its value."""
    anchor = next((span for span in spans if span.kind == kind), None)
    at = len(text) if anchor is None else text.find("\n", anchor.end) + 1 or len(text)
    if at == len(text) and not text.endswith("\n"):
        line = "\n" + line.rstrip("\n")
        value = value.model_copy(update={"start": value.start + 1, "end": value.end + 1})
    for span in spans:
        if span.start >= at:
            span.start += len(line)
            span.end += len(line)
    spans.append(value.model_copy(update={"start": value.start + at, "end": value.end + at}))
    spans.sort(key=lambda span: span.start)
    return text[:at] + line + text[at:]


def _plant_identifiers(text: str, spans: list[PiiSpan], rng: random.Random, locale: str, noisy: bool) -> str:
    """The customer's national ID under their e-mail line, a card number under the bank details.

    Planted into the rendered text with their own random stream, so the invoice is otherwise the
    same one that ``identifiers=False`` gives (same facts, layout and noise), plus two lines.
    """
    for kind, label, value in (
        ("email", rng.choice(_NATIONAL_ID_LABELS[locale]), (_national_id(rng, locale), "national_id")),
        ("iban", rng.choice(_CARD_LABELS), (_card_number(rng), "card_number")),
    ):
        if noisy:
            label = _noise(rng, label, 0.04)
        span = PiiSpan(kind=value[1], value=value[0], start=len(label), end=len(label) + len(value[0]))
        text = _insert_line_after(text, spans, kind, f"{label}{value[0]}\n", span)
    return text


_BUILDERS = {"classic": _classic, "receipt": _receipt, "european": _european, "keyvalue": _keyvalue, "markdown": _markdown}


def _truth(f: _Facts) -> InvoiceExtraction:
    return InvoiceExtraction(
        vendor=f.vendor,
        invoice_number=f.number,
        date=f.day.isoformat(),
        currency=f.loc.currency,
        total=float(f.total),
        tax=None if f.tax is None else float(f.tax),
        line_items=[
            LineItem(description=desc, quantity=float(qty), unit_price=float(unit), amount=float(amount))
            for desc, qty, unit, amount in f.items
        ],
    )


def _ensure_all_pii(doc: _Doc, rng: random.Random, f: _Facts) -> None:
    """Every document carries every PII kind at least once; add a contact footer for missing kinds."""
    present = {seg.kind for seg in doc.segments if seg.kind}
    extras = {
        "person_name": ("Contact: ", f.person), "email": ("Email: ", f.email), "phone": ("Phone: ", f.phone),
        "iban": ("IBAN: ", f.iban), "address": ("Address: ", f"{f.street}, {f.city}"),
    }
    for kind in PII_KINDS:
        if kind not in present:
            label, value = extras[kind]
            doc.line(label, _pii(value, kind))


def generate_invoice(
    rng: random.Random, invoice_id: str, noise_rate: float = 0.3, *, identifiers: bool = False,
    line_items: Optional[tuple[int, int]] = None,
) -> GeneratedInvoice:
    loc = rng.choice(LOCALES)
    # A multi-page invoice is never a till receipt: long documents use the locale's other layouts.
    layout = rng.choice(loc.layouts if line_items is None else tuple(x for x in loc.layouts if x != "receipt"))
    facts = _facts(rng, loc, layout, line_items)
    doc = _BUILDERS[layout](rng, facts)
    _ensure_all_pii(doc, rng, facts)
    noisy = rng.random() < noise_rate
    text, spans = _render(doc, rng, noisy)
    if identifiers:
        text = _plant_identifiers(text, spans, random.Random(f"{invoice_id}/identifiers"), loc.code, noisy)
    return GeneratedInvoice(id=invoice_id, text=text, truth=_truth(facts), pii=spans, layout=layout, noisy=noisy)


def generate_invoices(
    count: int, seed: int | str = 0, *, noise_rate: float = 0.3, identifiers: bool = False,
    line_items: Optional[tuple[int, int]] = None,
) -> list[GeneratedInvoice]:
    """``count`` invoices, identical for identical arguments; ids ``INV-<seed>-0001``…

    ``identifiers=True`` also prints a payment card number (valid Luhn) and the customer's
    national ID in the invoice's locale format (valid check digits), labelled as
    ``card_number`` and ``national_id``, so PII detection can be measured on them too. The
    invoices are otherwise the same as without it: same facts, layout and noise, two more lines.

    ``line_items=(low, high)`` makes long, multi-page invoices instead: between ``low`` and
    ``high`` billed lines each (default: 1-8), no receipt layout, distinct line descriptions.
    Without it the invoices of every seed are unchanged.
    """
    if line_items is not None and not 1 <= line_items[0] <= line_items[1] <= len(_SITE_CODES):
        raise ValueError(f"line_items must be (low, high) with 1 <= low <= high <= {len(_SITE_CODES)}, got {line_items}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    rng = random.Random(str(seed))
    return [generate_invoice(rng, f"INV-{seed}-{i:04d}", noise_rate, identifiers=identifiers, line_items=line_items)
            for i in range(1, count + 1)]
