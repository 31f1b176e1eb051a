"""Scrubbing row text out of errors, and a column's retry schedule."""

from __future__ import annotations

import logging
import time

import pytest

from embeddb.faults import Faults
from embeddb.scrub import MAX_MESSAGE, describe_failure, scrub


def test_the_text_its_repr_and_long_fragments_of_it_are_removed() -> None:
    text = "Subject: my code is XYZZY-42-PLUGH\n\nplease reset it for me"
    assert describe_failure(ValueError(f"bad input {text!r} at 3"), text) == \
        "ValueError: bad input '[row text]' at 3"
    assert describe_failure(RuntimeError(f"at {text}!"), text) == "RuntimeError: at [row text]!"
    # a fragment quoted (a tokenizer's window), short words of the message kept
    assert scrub("window 'XYZZY-42-PLUGH\\n\\npl' overflows", text, repr(text)[1:-1]) == \
        "window '[row text]' overflows"
    assert scrub("the model failed", "the model") == "[row text] failed"  # whole short text
    assert scrub("index out of range", text) == "index out of range"


def test_messages_are_bounded_and_long_texts_scrub_in_linear_time() -> None:
    text = "word " * 200_000
    started = time.monotonic()
    message = describe_failure(ValueError("x" * 3000 + text[:5000]), text)
    assert time.monotonic() - started < 5
    assert len(message) <= MAX_MESSAGE + len("ValueError: ") and "word word" not in message


def test_a_fault_is_logged_once_backs_off_with_jitter_and_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(backoff_seconds=1.0, backoff_max_seconds=8.0)
    caplog.set_level(logging.INFO, "embeddb.worker")
    delays = []
    for _ in range(6):
        fault = faults.failed(7, "public.t.embedding", "relation gone")
        delays.append(fault.retry_at - time.monotonic())
    assert caplog.text.count("relation gone") == 1 and faults.waiting(7)
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(2.0 ** (attempt - 1), 8.0)
        assert ceiling / 2 - 0.1 <= delay <= ceiling
    assert {round(faults.delay(3), 6) for _ in range(20)} != {4.0}  # jittered, not fixed
    faults.failed(7, "public.t.embedding", "permission denied")  # a new reason: said again
    assert caplog.text.count("permission denied") == 1
    assert faults.recovered(7, "public.t.embedding") and not faults.waiting(7)
    assert "recovered after 1 failed attempts" in caplog.text
