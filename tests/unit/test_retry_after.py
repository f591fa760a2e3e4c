"""``irsflow.retry.retry_after_s``: the one reading of a response's retry hint, used by the teacher
client and the Langfuse extraction. No servers, no models.

    .venv/bin/python -m pytest -q tests/unit/test_retry_after.py
"""

from __future__ import annotations

import email.message
import email.utils
from types import SimpleNamespace

import httpx
import pytest

from irsflow.retry import retry_after_s

NOW = 1_000_000.0


@pytest.mark.parametrize(
    "headers, wait",
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "0"}, 0.0),
        ({"Retry-After-Ms": "250.5"}, 0.2505),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "7"}, 7.0),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "0.3"}, 0.3),
        ({"retry-after": "1e1"}, 10.0),
    ],
)
def test_delay_forms(headers, wait):
    assert retry_after_s(headers) == pytest.approx(wait)


def test_milliseconds_win_over_seconds_and_a_bad_value_lets_seconds_speak():
    assert retry_after_s({"retry-after-ms": "200", "retry-after": "9"}) == pytest.approx(0.2)
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after_s({"retry-after-ms": "", "retry-after": "9"}) == 9.0
    assert retry_after_s({"retry-after-ms": "-5", "retry-after": "9"}) == 9.0


def test_http_date_counts_from_now_and_never_goes_negative():
    soon = email.utils.formatdate(NOW + 10, usegmt=True)  # "..., ... GMT"
    assert retry_after_s({"Retry-After": soon}, now=NOW) == 10.0
    assert retry_after_s({"retry-after": email.utils.formatdate(NOW - 60, usegmt=True)}, now=NOW) == 0.0
    # "-0000" (RFC 5322: UTC, no offset known) parses to a naive time: read as UTC, not local time
    naive = email.utils.formatdate(NOW + 5, usegmt=True).replace("GMT", "-0000")
    assert retry_after_s({"retry-after": naive}, now=NOW) == 5.0


def test_http_date_against_the_clock():
    wait = retry_after_s({"retry-after": email.utils.formatdate(usegmt=True)})
    assert wait is not None and 0.0 <= wait <= 1.0


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"content-type": "application/json"},
        {"retry-after": ""},
        {"retry-after": "   "},
        {"retry-after": "soon"},
        {"retry-after": "-3"},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after": "Mon, 99 Foo 2024 99:99:99 GMT"},
        {"retry-after-ms": "1000x"},
        {"retry-after-ms": "nan"},
    ],
)
def test_absent_or_unusable_hint_is_none(headers):
    assert retry_after_s(headers) is None


def test_header_objects_of_the_http_clients():
    assert retry_after_s(httpx.Headers({"Retry-After-Ms": "300"})) == pytest.approx(0.3)  # openai / teacher
    msg = email.message.Message()  # urllib / Langfuse
    msg["Retry-After"] = "4"
    assert retry_after_s(msg) == 4.0


def test_teacher_client_waits_for_the_hint_capped_by_max_wait(tmp_path):
    from irsflow.teacher.cache import JudgementCache
    from irsflow.teacher.client import TeacherSettings, _Run

    run = _Run(TeacherSettings(api_key="k", max_wait_s=5.0, backoff_s=100.0), JudgementCache(tmp_path / "c.sqlite"))
    err = RuntimeError("429")
    err.response = SimpleNamespace(headers=httpx.Headers({"retry-after-ms": "250"}))
    assert run.wait_s(0, err) == pytest.approx(0.25)
    err.response = SimpleNamespace(headers=httpx.Headers({"retry-after": "30"}))
    assert run.wait_s(0, err) == 5.0  # capped
    err.response = SimpleNamespace(headers=httpx.Headers({"retry-after": "later"}))
    assert run.wait_s(0, err) == 5.0  # no usable hint: own back-off (100 s), capped
    assert run.wait_s(0, RuntimeError("no response")) == 5.0


def test_langfuse_uses_the_same_parser():
    from irsflow.feedback import langfuse, langfuse_api

    assert langfuse.retry_after_s is retry_after_s and langfuse_api.retry_after_s is retry_after_s
