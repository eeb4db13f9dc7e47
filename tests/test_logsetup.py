import logging
import re

from logsetup import MASK, OneLineFormatter, SecretFilter


def _record(msg, *args, exc_info=None):
    return logging.LogRecord("lib", logging.INFO, __file__, 1, msg, args, exc_info)


def test_registered_secrets_are_masked_even_in_args():
    flt = SecretFilter()
    flt.add("hrku-token-123456", "tiny")
    record = _record("calling with %s", "Authorization hrku-token-123456")
    flt.filter(record)
    assert "hrku-token-123456" not in record.getMessage()
    assert MASK in record.getMessage()


def test_short_secrets_are_masked_as_whole_words():
    flt = SecretFilter()
    flt.add("abc", "a", "k3y-42")
    record = _record("X-Api-Key: abc, key=abc; abcdef xabc abc-d: a data k3y-42 k3y-420 (k3y-42)")
    flt.filter(record)
    assert record.getMessage() == (
        f"X-Api-Key: {MASK}, key={MASK}; abcdef xabc abc-d: {MASK} data {MASK} k3y-420 ({MASK})"
    )


def test_lines_carry_the_time_only_when_asked():
    record = _record("hello")
    assert OneLineFormatter().format(record) == "INFO lib: hello"
    stamped = OneLineFormatter(timestamps=True).format(record)
    assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] INFO lib: hello$", stamped), stamped


def test_unregistered_bearer_tokens_snapshots_and_url_passwords_are_masked():
    flt = SecretFilter()
    snapshot = "H4sI" + "A" * 500
    record = _record(
        "headers={'Authorization': 'Bearer abcdef0123456789'} value=%s db=postgres://u:pw1234@host/db", snapshot
    )
    flt.filter(record)
    text = record.getMessage()
    assert "abcdef0123456789" not in text
    assert snapshot[:200] not in text
    assert "pw1234" not in text
    assert "postgres://u:" in text


def test_tracebacks_are_masked_and_folded_onto_one_line():
    flt = SecretFilter()
    flt.add("sekret-value-42")
    try:
        raise RuntimeError("boom sekret-value-42")
    except RuntimeError:
        import sys

        record = _record("failed", exc_info=sys.exc_info())
    flt.filter(record)
    line = OneLineFormatter().format(record)
    assert "\n" not in line
    assert "sekret-value-42" not in line
    assert "RuntimeError" in line
