"""The one stats record (`evol.stats.CallStats`) and the one message builder every backend uses."""
from __future__ import annotations

from evol.backends.base import BackendError, Image, Message, Reply, Request, Text, chat_messages, image_url_part
from evol.stats import CallStats, Tally


def _failed(attempts: int, tokens_in: int = 0, tokens_out: int = 0) -> BackendError:
    exc = BackendError("x")
    exc.attempts, exc.tokens_in, exc.tokens_out = attempts, tokens_in, tokens_out
    return exc


def test_calls_are_counted_the_same_way_everywhere():
    st = CallStats()
    st.answered(Reply("a", tokens_in=10, tokens_out=2))
    st.answered(Reply("b", tokens_in=10, tokens_out=2, cached=True))
    st.gave_up(_failed(3, 30, 6))
    st.gave_up(_failed(0))  # nothing was sent: not a failed call of this record
    assert (st.calls, st.cached, st.failed, st.tokens_in, st.tokens_out) == (1, 1, 1, 40, 8)
    st.ran(Reply("c", tokens_in=5, tokens_out=1), usable=False)  # a local engine: no retry
    assert (st.failed, st.sent, st.tokens_in) == (2, Tally(1, 5, 1), 45)
    assert st.http() is None  # requests are not counted by outcome here


def test_http_summary_and_totals():
    a, b = CallStats(by_outcome=True), CallStats(by_outcome=True)
    for st in (a, b):
        st.sent.add(3, 30, 3)
        st.outcomes.add("ok", 1, 10, 1)
        st.outcomes.add("retried_parse", 1, 10, 1)
        st.outcomes.add("failed_429")
    a.outcomes.add("retried_timeout")
    total = CallStats.total(a, b, a)  # the same record twice counts once
    assert total.http() == {
        "requests": 6, "tokens_in": 60, "tokens_out": 6, "ok": {"requests": 2, "tokens_in": 20, "tokens_out": 2},
        "retried": {"timeout": {"requests": 1, "tokens_in": 0, "tokens_out": 0},
                    "parse": {"requests": 2, "tokens_in": 20, "tokens_out": 2}},
        "failed": {"429": {"requests": 2, "tokens_in": 0, "tokens_out": 0}}}
    assert total.outcomes.count("retried") == 3 and total.outcomes.count(kind="429") == 2
    assert a.outcomes.count("retried") == 2, "adding leaves the parts alone"


def test_records_add_up_field_by_field_as_the_seed_commands_sum_them():
    one, two = CallStats(calls=2, cached=1, tokens_in=5), CallStats(calls=1, failed=1, tokens_out=7)
    summed: dict = {}
    for s in (one, two):
        for k, v in vars(s).items():
            summed[k] = summed.get(k, 0) + v
    assert (summed["calls"], summed["cached"], summed["failed"], summed["tokens_in"], summed["tokens_out"]) == (
        3, 1, 1, 5, 7)
    assert CallStats.total(one, two).seed_counts() == {
        "model_calls": 3, "cached_calls": 1, "failed_calls": 1, "tokens": {"in": 5, "out": 7}}


def test_one_message_builder_in_three_shapes():
    req = Request(messages=(Message.text("system", "be brief"),
                            Message("user", (Image("a.jpg"), Text("what is it?"), Text("one word")))))
    assert chat_messages(req, lambda ref: image_url_part("data:" + ref, "low")) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a.jpg", "detail": "low"}},
                                     {"type": "text", "text": "what is it?"}, {"type": "text", "text": "one word"}]}]
    parts = chat_messages(req, lambda ref: {"type": "image"}, content="parts")
    assert parts[0]["content"] == [{"type": "text", "text": "be brief"}] and parts[1]["content"][0] == {"type": "image"}
    assert chat_messages(req, None, content="joined") == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "what is it?\n\none word"}]
