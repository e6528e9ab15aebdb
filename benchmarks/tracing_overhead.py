"""What a trace costs per AI call: N call spans with their attributes, DuckDB exporter on, vs the same loop untraced.

Both loops build the same ``CallResult`` per iteration; the traced one wraps it in
``call_span(...).record(result)`` under one step and one item span, and its time includes
``force_flush()``, i.e. writing every span to the DuckDB store. The difference divided by N
is the overhead per span (target ≤ 0.2 ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.model_call import CallResult  # noqa: E402
from resources.duckdb_file import scratch_directory  # noqa: E402
from resources.tracing import TraceRecorder, TraceStore  # noqa: E402

TARGET_MS = 0.2


def _result(i: int) -> CallResult:
    return CallResult(model_id="gpt-4o-mini", input_tokens=800 + i % 50, output_tokens=90, cost_usd=0.00018,
                      latency_s=0.4, finish_reason="stop", error=None if i % 50 else "HTTP 429 from gpt-4o-mini: slow down")


def _untraced(n: int) -> float:
    started = time.perf_counter()
    sink = []
    for i in range(n):
        sink.append(_result(i))
    return time.perf_counter() - started


def _traced(n: int, store: Path) -> tuple[float, float]:
    recorder = TraceRecorder(store)
    started = time.perf_counter()
    sink = []
    with recorder.run_span("bench-run", "extract", "invoices/extracted", "2026-03-03"):
        with recorder.item_span("bench-item", "0" * 64, "internal"):
            for i in range(n):
                with recorder.call_span("gpt-4o-mini", "openai", route_reason="cheapest-eligible", attempt=1) as call:
                    result = _result(i)
                    call.record(result, check_passed=result.error is None)
                sink.append(result)
    loop = time.perf_counter() - started
    recorder.force_flush()
    total = time.perf_counter() - started
    recorder.shutdown()
    return loop, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with scratch_directory() as tmp:
        store = Path(tmp) / "traces.duckdb"
        _traced(200, Path(tmp) / "warmup.duckdb")  # imports, first DuckDB open, pandas registration
        _untraced(200)
        base = _untraced(args.n)
        loop, total = _traced(args.n, store)
        stored = len(TraceStore(store).spans("bench-run"))
    report = {
        "n": args.n,
        "untraced_ms": round(base * 1e3, 2),
        "traced_loop_ms": round(loop * 1e3, 2),
        "traced_with_flush_ms": round(total * 1e3, 2),
        "overhead_ms_per_span": round((total - base) * 1e3 / args.n, 4),
        "hot_path_overhead_ms_per_span": round((loop - base) * 1e3 / args.n, 4),
        "ratio": round(total / base, 2),
        "spans_stored": stored,
        "target_ms_per_span": TARGET_MS,
    }
    report["within_target"] = report["overhead_ms_per_span"] <= TARGET_MS
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:32s} {value}")
    return 0 if stored == args.n + 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
