"""Fault injection: each fault mix against a loopback OpenAI / Anthropic server, and what the template made of it.

Every mix of ``tests/fault_harness.py`` (429 with Retry-After, 500, 503, Anthropic's 529, a reply slower
than the timeout, a dropped connection, truncated JSON, schema-invalid JSON, wrong token counts), the
twelve-item ``mixed`` plan and two circuit-breaker scenarios (``circuit-open``: five items failing for
good, then three the open circuit refuses; ``all-recover``: eight items that each recover on their 2nd
attempt, which must not open it) run generated invoices through
``run_ai_task`` on a real 127.0.0.1 server, with 3 HTTP attempts per call, 10-20 ms backoff and a 1 s
timeout. Per scenario and protocol:

    items ok / failed, HTTP requests the server received, transport attempts the results report (must
    equal the requests), retries (requests beyond one per call that made any),
    ledger rows and rows with a charge, duplicate charges (repeated call_id or item × attempt: must be 0),
    transport-attempt events in the trace (must equal the requests) and the cost in the ledger.

``--json`` prints one JSON object keyed by fault, then protocol. Runs in about 30 s. Exits 1 when any
accounting check fails (today: the two breaker scenarios, whose refused calls report an attempt they never made).

    python benchmarks/fault_injection.py [--json] [--only 429-retry-after,timeout]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.duckdb_file import scratch_directory  # noqa: E402
from tests.fault_harness import (  # noqa: E402
    FAULTS, PROTOCOLS, answer, invoices, mixed_plans, run_fault, run_plans,
)
from tests.protocol_servers import ServerError  # noqa: E402

COLUMNS = [("fault", 20), ("protocol", 9), ("ok", 3), ("failed", 6), ("requests", 8), ("reported", 8), ("retries", 7),
           ("ledger", 6), ("charged", 7), ("dup", 3), ("events", 6), ("cost_usd", 12), ("s", 5)]


def _scenario(name: str, workdir: Path, protocol: str):
    """The plans beyond the single-fault mixes: the mixed batch and two that show the circuit breaker."""
    if name == "mixed":  # twelve items, every fault once among clean items
        batch = invoices(12)
        return run_plans(workdir, protocol, mixed_plans(batch), name=name, batch=batch)
    if name == "circuit-open":  # items 0-4 fail for good: five failed calls open the circuit, 5-7 are refused
        batch = invoices(8)
        plans = {**{i: [ServerError()] for i in range(5)}, **{i: [answer(batch[i])] for i in range(5, 8)}}
        return run_plans(workdir, protocol, plans, name=name, batch=batch)
    if name == "all-recover":  # every call recovers on its 2nd attempt: the breaker counts calls, so it stays closed
        batch = invoices(8)
        return run_plans(workdir, protocol, {i: [ServerError(), answer(batch[i])] for i in range(8)}, name=name, batch=batch)
    raise ValueError(f"unknown scenario {name!r}")


def run_all(workdir: Path, only: "set[str] | None" = None) -> dict:
    report: dict[str, dict] = {}
    mixes = [(name, fault.protocols) for name, fault in FAULTS.items()]
    mixes += [("mixed", tuple(PROTOCOLS)), ("circuit-open", ("openai",)), ("all-recover", ("openai",))]
    for name, protocols in mixes:
        if only and name not in only:
            continue
        for protocol in protocols:
            started = time.perf_counter()
            where = workdir / f"{name}-{protocol}"
            run = run_fault(name, protocol, where) if name in FAULTS else _scenario(name, where, protocol)
            summary = run.summary()
            summary["seconds"] = round(time.perf_counter() - started, 2)
            summary["consistent"] = (summary["duplicate_charges"] == 0
                                     and summary["trace_attempt_events"] == summary["http_requests"]
                                     and summary["transport_attempts"] == summary["http_requests"]
                                     and summary["ledger_rows"] == summary["call_spans"]
                                     and abs(summary["ledger_cost_usd"] - summary["results_cost_usd"]) < 1e-9)
            report.setdefault(name, {})[protocol] = summary
    return report


def render(report: dict) -> str:
    header = " ".join(name.ljust(width) if i < 2 else name.rjust(width) for i, (name, width) in enumerate(COLUMNS))
    lines = [header, "-" * len(header)]
    for name, by_protocol in report.items():
        for protocol, s in by_protocol.items():
            values = [name, protocol, s["ok"], s["failed"], s["http_requests"], s["transport_attempts"], s["retries"],
                      s["ledger_rows"],
                      s["ledger_charged_rows"], s["duplicate_charges"], s["trace_attempt_events"],
                      f"{s['ledger_cost_usd']:.6f}", f"{s['seconds']:.1f}"]
            lines.append(" ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                                  for i, (v, (_, w)) in enumerate(zip(values, COLUMNS))))
    lines.append("")
    lines.append("failures, as the items' errors say (first 90 characters):")
    for name, by_protocol in report.items():
        for protocol, s in by_protocol.items():
            for error in s["errors"]:
                lines.append(f"  {name}/{protocol}: {error}")
    broken = [f"{n}/{p}" for n, by in report.items() for p, s in by.items() if not s["consistent"]]
    lines.append("")
    lines.append("accounting: " + ("consistent everywhere (no duplicate charge, one trace event per HTTP request, "
                                   "attempts reported = requests, one span per ledger row, ledger cost = results' cost)"
                                   if not broken
                                   else "INCONSISTENT in " + ", ".join(broken)))
    return "\n".join(lines)


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object keyed by fault, then protocol")
    parser.add_argument("--only", help="comma-separated fault names (and/or 'mixed')")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    with scratch_directory(prefix="fault-injection-") as tmp:
        report = run_all(Path(tmp), only)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if all(s["consistent"] for by in report.values() for s in by.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
