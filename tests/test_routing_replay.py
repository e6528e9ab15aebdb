"""The replay benchmark on a data set it has never seen: policies, metrics and the PNG, as a user runs it."""

import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _dataset(path: Path, rows: int = 300) -> None:
    rng = random.Random(3)
    with path.open("w") as handle:
        for i in range(rows):
            hard = rng.random() < 0.4
            topic = rng.choice(["integral contour residue", "spectral sequence"] if hard else ["capital city", "color of sky"])
            weak_ok = (not hard) and rng.random() < 0.9
            strong_ok = rng.random() < 0.9
            handle.write(json.dumps({
                "id": f"q{i}", "domain": "math" if hard else "trivia", "prompt": f"Question {i} about {topic}?",
                "outcomes": {"small": {"correct": weak_ok}, "big": {"correct": strong_ok}},
            }) + "\n")


def test_replay_reports_every_policy_and_learned_beats_random(tmp_path):
    data = tmp_path / "toy.jsonl"
    _dataset(data)
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "routing_replay.py"), "--data", str(data), "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for policy in ("random", "always_weak", "always_strong", "rules", "learned", "cascade"):
        assert {"apgr", "cpt50", "cpt80"} <= set(report[policy]), policy
    assert report["_meta"]["weak"] == "small" and report["_meta"]["strong"] == "big"  # by accuracy: no prices known
    # a perfect hard/easy split gives about 0.8 here; random about 0.5
    assert report["learned"]["apgr"] > report["random"]["apgr"] + 0.15
    assert report["learned"]["cpt50"] < 0.5
    assert (tmp_path / "routing_replay_toy.png").stat().st_size > 1000


def test_replay_refuses_malformed_rows(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "x", "outcomes": {}}\n{"prompt": 3}\n')
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "routing_replay.py"), "--data", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "bad.jsonl:2" in done.stderr
