"""PII detection recall and precision on labelled generated invoices, and the time it takes per document.

The generator knows where it printed every piece of personal data (``GeneratedInvoice.pii``),
here with card numbers and national IDs planted too (``identifiers=True``). Span-level scoring:

- recall: a labelled span counts as found when detections of the same kind cover at least
  80% of its characters (several detections may cover one span: an address split in two);
  ``recall_any_kind`` also accepts detections of another kind, since the value is masked either way;
- precision: a detection counts as correct when at least half of its characters lie inside
  labelled spans of its kind.

When ``../shared/data/sroie/dev.jsonl`` is present, the vendor addresses of those real
receipts (labelled by SROIE, never seen by the detector's author as test data) give an
out-of-distribution address recall.

    python benchmarks/pii_detection.py [--count 300] [--seed 0] [--json] [--show-misses N]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestration_assets.invoices.generator import generate_invoices  # noqa: E402
from resources.pii import PII_KINDS, PiiFinding, detect_pii  # noqa: E402

SROIE = REPO.parent / "shared" / "data" / "sroie" / "dev.jsonl"
COVERAGE = 0.8


def _covered(start: int, end: int, findings: list[PiiFinding], kind: str | None) -> float:
    chars = set()
    for f in findings:
        if kind is None or f.kind == kind:
            chars.update(range(max(start, f.start), min(end, f.end)))
    return len(chars) / max(1, end - start)


def score_documents(docs: list, *, misses: list | None = None) -> dict:
    """Per-kind and overall recall/precision plus p50/p95 detection time over generated invoices."""
    labelled: dict[str, int] = defaultdict(int)
    found: dict[str, int] = defaultdict(int)
    found_any: dict[str, int] = defaultdict(int)
    detected: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    times_ms: list[float] = []
    for doc in docs:
        started = time.perf_counter()
        findings = detect_pii(doc.text)
        times_ms.append((time.perf_counter() - started) * 1000)
        for span in doc.pii:
            labelled[span.kind] += 1
            hit = _covered(span.start, span.end, findings, span.kind) >= COVERAGE
            found[span.kind] += hit
            found_any[span.kind] += _covered(span.start, span.end, findings, None) >= COVERAGE
            if not hit and misses is not None:
                misses.append(("miss", span.kind, span.value, doc.id))
        by_kind_chars: dict[str, set[int]] = defaultdict(set)
        for span in doc.pii:
            by_kind_chars[span.kind].update(range(span.start, span.end))
        for f in findings:
            detected[f.kind] += 1
            inside = len(by_kind_chars[f.kind].intersection(range(f.start, f.end)))
            ok = inside >= 0.5 * (f.end - f.start)
            correct[f.kind] += ok
            if not ok and misses is not None:
                misses.append(("false_positive", f.kind, doc.text[f.start : f.end], doc.id))
    by_kind = {}
    for kind in PII_KINDS:
        if labelled[kind] or detected[kind]:
            by_kind[kind] = {
                "labelled": labelled[kind],
                "detected": detected[kind],
                "recall": round(found[kind] / labelled[kind], 4) if labelled[kind] else None,
                "recall_any_kind": round(found_any[kind] / labelled[kind], 4) if labelled[kind] else None,
                "precision": round(correct[kind] / detected[kind], 4) if detected[kind] else None,
            }
    total_labelled, total_detected = sum(labelled.values()), sum(detected.values())
    times_ms.sort()
    return {
        "documents": len(docs),
        "recall": round(sum(found.values()) / total_labelled, 4) if total_labelled else None,
        "recall_any_kind": round(sum(found_any.values()) / total_labelled, 4) if total_labelled else None,
        "precision": round(sum(correct.values()) / total_detected, 4) if total_detected else None,
        "by_kind": by_kind,
        "ms_per_document_p50": round(statistics.median(times_ms), 3) if times_ms else None,
        "ms_per_document_p95": round(times_ms[int(0.95 * (len(times_ms) - 1))], 3) if times_ms else None,
    }


def sroie_address_recall(limit: int, *, misses: list | None = None) -> dict | None:
    """Share of SROIE vendor addresses (located in the receipt text) that address detections cover ≥ 80%."""
    if not SROIE.is_file():
        return None
    located = hits = 0
    for line in SROIE.read_text().splitlines()[:limit]:
        row = json.loads(line)
        words = (row.get("address") or "").split()
        if not words:
            continue
        pattern = r"\s*".join(re.escape(w) for w in words)
        m = re.search(pattern, row["text"])
        if m is None:
            continue  # the OCR text spells it differently: not scoreable
        located += 1
        findings = [f for f in detect_pii(row["text"]) if f.kind == "address"]
        non_space = [i for i in range(m.start(), m.end()) if not row["text"][i].isspace()]
        inside = sum(any(f.start <= i < f.end for f in findings) for i in non_space)
        hit = inside >= COVERAGE * len(non_space)
        hits += hit
        if not hit and misses is not None:
            misses.append(("sroie_address_miss", "address", m.group(), row["id"]))
    return {"located": located, "recall": round(hits / located, 4) if located else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="generated invoices (default 300)")
    parser.add_argument("--seed", default="0", help="generator seed (default 0)")
    parser.add_argument("--sroie-limit", type=int, default=400, help="SROIE receipts for address recall")
    parser.add_argument("--show-misses", type=int, default=0, help="print up to N misses and false positives")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    docs = generate_invoices(args.count, seed=seed, identifiers=True)
    misses: list = [] if args.show_misses else None  # type: ignore[assignment]
    report = score_documents(docs, misses=misses)
    sroie = sroie_address_recall(args.sroie_limit, misses=misses)
    if sroie is not None:
        report["sroie_address"] = sroie
    if misses:
        for row in misses[: args.show_misses]:
            print(" | ".join(map(repr, row)), file=sys.stderr)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['documents']} documents, seed {args.seed}: recall {report['recall']} "
          f"(any kind {report['recall_any_kind']}), precision {report['precision']}, "
          f"p50 {report['ms_per_document_p50']} ms, p95 {report['ms_per_document_p95']} ms per document")
    print(f"{'kind':14s}{'labelled':>9s}{'detected':>9s}{'recall':>8s}{'any kind':>9s}{'precision':>10s}")
    for kind, row in report["by_kind"].items():
        print(f"{kind:14s}{row['labelled']:>9d}{row['detected']:>9d}{row['recall'] or 0:>8.3f}"
              f"{row['recall_any_kind'] or 0:>9.3f}{row['precision'] or 0:>10.3f}")
    if sroie is not None:
        print(f"SROIE vendor addresses (real receipts): recall {sroie['recall']} over {sroie['located']} located")


if __name__ == "__main__":
    main()
