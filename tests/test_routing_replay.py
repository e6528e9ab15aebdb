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


def _replay(tmp_path, rows: list[dict], *extra: str) -> subprocess.CompletedProcess:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "routing_replay.py"), "--data", str(data), "--json",
                           "--out", str(tmp_path), *extra], capture_output=True, text=True, timeout=300)


def _rows(n: int, outcome, seed: int = 5) -> list[dict]:
    """Hard questions the small model misses; ``outcome(ok, i)`` writes one model's result."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = rng.random() < 0.4
        rows.append({"id": f"q{i}", "uid": f"u-{i:05d}", "domain": "math" if hard else "trivia",
                     "prompt": f"Question {i} about {'contour residues' if hard else 'capital cities'}?",
                     "outcomes": {"small": outcome((not hard) and rng.random() < 0.9, i),
                                  "big": outcome(rng.random() < 0.9, i)}})
    return rows


def test_a_model_missing_from_rows_is_not_run_there_not_wrong(tmp_path):
    """40 % of rows lack the big model's outcome: read as failures, they made it the weak one."""
    rows = _rows(600, lambda ok, i: {"correct": ok})
    for i, row in enumerate(rows):
        if i % 5 < 2:
            del row["outcomes"]["big"]
    done = _replay(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    meta = report["_meta"]
    assert (meta["weak"], meta["strong"]) == ("small", "big")
    assert meta["test_rows_scored"] + meta["test_rows_without_both_outcomes"] == 180
    assert 60 <= meta["test_rows_without_both_outcomes"] <= 85
    assert 0 <= report["learned"]["apgr"] <= 1.2 and report["learned"]["apgr"] > report["random"]["apgr"] + 0.1
    assert meta["learned_evaluation"]["big"]["observed"] < 0.7 * meta["learned_evaluation"]["small"]["observed"]


def test_results_as_numbers_strings_and_bare_values_are_read_as_what_they_say(tmp_path):
    spellings = [lambda ok, i: int(ok), lambda ok, i: "true" if ok else "false", lambda ok, i: ok,
                 lambda ok, i: {"correct": 0.9 if ok else 0.1}]
    apgrs = []
    for spell in spellings:
        done = _replay(tmp_path, _rows(300, spell))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert 0.3 < report["always_weak"]["quality"] < 0.7 and report["always_strong"]["quality"] > 0.75
        apgrs.append(report["learned"]["apgr"])
    assert max(apgrs) - min(apgrs) < 0.05  # the same outcomes, however spelled
    bad = _replay(tmp_path, _rows(300, lambda ok, i: "maybe" if i == 7 else ok))
    assert bad.returncode != 0 and "'q7'" in bad.stderr and "'maybe'" in bad.stderr


def test_an_id_like_field_is_not_an_attribute_and_bad_prices_are_refused(tmp_path):
    done = _replay(tmp_path, _rows(300, lambda ok, i: ok))
    meta = json.loads(done.stdout)["_meta"]
    assert meta["attributes"] == ["domain"] and set(meta["attribute_ceiling"]) == {"domain"}
    for spec in ("small=1", "small=nan,1", "small=-1,2", "small=1,2,3", "=1,2"):
        refused = _replay(tmp_path, _rows(300, lambda ok, i: ok), "--price", spec)
        assert refused.returncode != 0 and "--price" in refused.stderr and "Traceback" not in refused.stderr, spec


def test_no_quality_gap_is_said_beside_the_numbers(tmp_path):
    done = _replay(tmp_path, _rows(300, lambda ok, i: True))
    assert done.returncode == 0, done.stderr
    assert any("no quality gap" in w for w in json.loads(done.stdout)["_meta"]["warnings"])


def test_graded_scores_above_one_half_still_teach_the_policy(tmp_path):
    """Scores all in 0.5-1.0: read as pass/fail at 0.5 every row was a success and nothing was learned."""
    rng = random.Random(11)

    def score(hard: bool, strong: bool) -> float:
        return rng.uniform(0.9, 1.0) if hard and strong else rng.uniform(0.5, 0.6) if hard else rng.uniform(0.7, 0.9)

    rows = [{"prompt": f"Question {i} about {'contour residues' if i % 5 < 2 else 'capital cities'}?",
             "outcomes": {"small": {"score": score(i % 5 < 2, False)}, "big": {"score": score(i % 5 < 2, True)}}}
            for i in range(400)]
    done = _replay(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert 0.5 < report["_meta"]["success_threshold"] < 0.9
    assert report["learned"]["apgr"] > report["_meta"]["random_apgr_over_draws"]["mean"] + 0.2


def test_a_model_run_on_few_rows_is_not_taken_as_the_strong_one(tmp_path):
    rows = _rows(500, lambda ok, i: {"correct": ok})
    for i, row in enumerate(rows):
        if i % 10 == 0:
            row["outcomes"]["specialist"] = {"correct": True}  # always right, on a tenth of the rows
    done = _replay(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)["_meta"]
    assert (meta["weak"], meta["strong"]) == ("small", "big")
    assert any("placeholder prices" in w for w in meta["warnings"])  # neither model has a known price
    assert meta["prices_usd_per_mtok"] == {"small": [1.0, 1.0], "big": [20.0, 20.0]}


def test_a_prompt_asked_twice_is_never_on_both_sides_of_the_split(tmp_path):
    """200 prompts asked 10 times each, outcomes fixed per prompt but unrelated to its text: nothing to learn.
    Split by row, the policy recalled the test rows' answers from their training twins (APGR above 1)."""
    rng = random.Random(4)
    rows = []
    for p in range(200):
        small, big = rng.random() < 0.5, rng.random() < 0.8
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]) for _ in range(6))
        rows += [{"prompt": f"{words} {p}?", "outcomes": {"small": small, "big": big}} for _ in range(10)]
    done = _replay(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["learned"]["apgr"] < 0.75
    import importlib.util

    spec = importlib.util.spec_from_file_location("routing_replay", REPO / "benchmarks" / "routing_replay.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    train, test = replay.split_rows(rows, seed=0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert abs(len(train) / len(rows) - 0.7) < 0.05


def test_chinese_prompts_without_spaces_are_read_character_by_character(tmp_path):
    rng = random.Random(8)
    filler = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就"
    rows = []
    for i in range(600):
        hard = rng.random() < 0.4
        body = "".join(rng.choice(filler) for _ in range(12))
        prompt = body[:6] + ("积分留数" if hard else "首都城市") + body[6:]  # no spaces anywhere
        rows.append({"prompt": prompt, "outcomes": {"small": (not hard) and rng.random() < 0.9, "big": rng.random() < 0.9}})
    done = _replay(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["learned"]["apgr"] > report["_meta"]["random_apgr_over_draws"]["mean"] + 0.2


def test_an_outcome_under_an_unknown_key_is_refused_not_read_as_not_run(tmp_path):
    done = _replay(tmp_path, _rows(300, lambda ok, i: {"is_correct": ok}))
    assert done.returncode != 0 and "neither 'correct' nor 'score'" in done.stderr and "Traceback" not in done.stderr
