"""resources.chunking: chunks fit the budget, lose nothing, cut where a reader would, and say which limit bit."""

import pytest

from resources.chunking import ChunkingError, chunk_id, only_in_header, split_text, token_budget
from resources.complexity import estimate_tokens

HEADER = "Acme Supplies Ltd\nInvoice No: INV-42\nDate: 2026-03-02\n"


def _long_text(lines: int = 120) -> str:
    body = "".join(f"Widget model {i:03d}, blue, boxed          2     10.00     20.00\n" for i in range(lines))
    return HEADER + "\n" + body + "\nSubtotal 2400.00\nTotal 2400.00\n"


def test_a_text_that_fits_is_one_chunk_without_a_repeated_header():
    (chunk,) = split_text("doc", HEADER, 100)
    assert (chunk.id, chunk.index, chunk.count, chunk.text, chunk.header_chars) == ("doc#1/1", 1, 1, HEADER, 0)
    assert chunk.tokens == estimate_tokens(HEADER) and not chunk.repeats_header


def test_long_text_is_split_within_budget_every_chunk_repeats_the_header_and_nothing_is_lost():
    text = _long_text()
    chunks = split_text("INV-42", text, 300, header_lines=3)
    # 62-character lines are 16 tokens; 300 minus the header's 14 holds 17 of them: 125 lines make 8 chunks.
    assert len(chunks) == 8
    assert [c.id for c in chunks] == [chunk_id("INV-42", i, 8) for i in range(1, 9)] and chunks[1].id == "INV-42#2/8"
    assert all(estimate_tokens(c.text) == c.tokens <= 300 for c in chunks)
    assert all(c.header == HEADER and c.text.startswith(HEADER) for c in chunks)
    assert HEADER + "".join(c.body for c in chunks) == text  # lossless: header once plus every body, in order
    assert all(c.body.endswith("\n") for c in chunks)  # cuts on line boundaries only
    assert [c.repeats_header for c in chunks[:2]] == [False, True]


def test_a_cut_prefers_the_blank_line_that_ends_a_paragraph():
    paragraph = "".join(f"clause {i} of the agreement holds here\n" for i in range(6))  # 6 lines, 10 tokens each
    text = HEADER + paragraph + "\n" + paragraph + "\n" + paragraph
    chunks = split_text("contract", text, 100, header_lines=3)
    # Greedy would fill 8 lines; the blank line after the first paragraph is in the chunk's second half.
    assert chunks[0].body == paragraph + "\n"
    assert chunks[1].body == paragraph + "\n"


def test_a_line_longer_than_the_budget_is_split_hard_at_spaces():
    line = " ".join(f"word{i:04d}" for i in range(400)) + "\n"  # one 3,600-character line
    chunks = split_text("scan", line, 200, header_lines=1)
    assert len(chunks) > 1 and all(c.tokens <= 200 for c in chunks)
    assert all(c.header_chars == 0 for c in chunks)  # the only line is too long to repeat as a header
    assert "".join(c.body for c in chunks) == line
    assert all(c.body.endswith(" ") for c in chunks[:-1])  # cut after a space, not inside a word
    no_spaces = "x" * 2000
    hard = split_text("blob", no_spaces, 100)
    assert "".join(c.text for c in hard) == no_spaces and all(len(c.text) == 400 for c in hard[:-1])


def test_too_many_chunks_fail_with_the_numbers():
    with pytest.raises(ChunkingError, match=r"document INV-42 needs 8 chunks of at most 300 tokens .*max_chunks 5"):
        split_text("INV-42", _long_text(), 300, header_lines=3, max_chunks=5)


def test_a_token_counter_can_be_passed_in():
    words = lambda text: len(text.split())  # noqa: E731 - e.g. a model's own tokenizer
    chunks = split_text("d", _long_text(40), 60, header_lines=3, count_tokens=words)
    assert len(chunks) > 1 and all(words(c.text) <= 60 for c in chunks)


def test_budget_is_the_smallest_window_minus_what_every_call_reserves():
    windows = {"big": 128_000, "small": 4096, "rules": 1_000_000}
    budget = token_budget(windows, reserved_tokens=2500)
    assert (budget.tokens, budget.model, budget.context_window, budget.capped) == (1596, "small", 4096, False)
    assert "small's 4096-token context minus 2500 reserved" in budget.describe()
    capped = token_budget(windows, reserved_tokens=2500, cap=800)
    assert (capped.tokens, capped.model, capped.capped) == (800, "small", True)
    assert capped.describe() == "≤ 800 tokens a chunk (max_chunk_tokens, below small's 4096-token context minus 2500 reserved)"


def test_budget_errors_name_the_limit():
    with pytest.raises(ChunkingError, match=r"tiny's context window of 2048 tokens leaves -452 tokens .* 2500 reserved"):
        token_budget({"tiny": 2048, "big": 200_000}, reserved_tokens=2500)
    with pytest.raises(ChunkingError, match="no model may serve"):
        token_budget({}, reserved_tokens=100)
    with pytest.raises(ChunkingError, match="max_chunk_tokens 10 is below the minimum"):
        token_budget({"big": 200_000}, reserved_tokens=100, cap=10)


def test_only_values_read_from_a_repeated_header_count_as_header_repeats():
    first, second = split_text("INV-42", _long_text(), 300, header_lines=3)[:2]
    assert only_in_header(second, "acme  supplies LTD")  # case and spacing do not matter
    assert not only_in_header(first, "Acme Supplies Ltd")  # the first chunk's header is the document's own
    assert not only_in_header(second, "Widget model 020, blue, boxed")  # in the chunk's own text
    assert not only_in_header(second, "something else")
