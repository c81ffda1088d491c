"""Properties and header tables read and written byte for byte: pure logic, no broker."""

from __future__ import annotations

import datetime
import decimal

import pika
import pytest

from helpers import EVERY_TYPE, MILLIS, field, long_string, table
from workqueue.headers import (
    Entry,
    Unreadable,
    copy_properties,
    entries,
    join_properties,
    read_table,
    split_properties,
)

LIMIT = 131_072 - 20  # properties that fit one content header frame of the default frame_max


def encoded(**properties) -> bytes:
    return b"".join(pika.BasicProperties(**properties).encode())


def test_properties_split_and_join_give_back_the_same_bytes():
    raw = encoded(content_type="application/json", headers={"a": 1, "b": "x"}, delivery_mode=2, priority=3,
                  correlation_id="c", reply_to="r", expiration="1500", message_id="m", timestamp=5, type="t",
                  user_id="guest", app_id="app")
    fields = split_properties(raw)
    assert list(fields) == ["content_type", "headers", "delivery_mode", "priority", "correlation_id", "reply_to",
                            "expiration", "message_id", "timestamp", "type", "user_id", "app_id"]
    assert join_properties(fields) == raw


def test_a_table_is_read_entry_by_entry_as_it_was_written():
    raw = table(*EVERY_TYPE)
    assert entries(raw) == [Entry(name.encode(), value) for name, value in EVERY_TYPE]


def test_values_are_read_as_python_holds_them_and_unreadable_where_it_cannot():
    values = read_table(table(*EVERY_TYPE))
    assert values["double"] == 2.5 and values["float"] == 1.5, "a double stays a double, not pika 1.4's integer"
    assert (values["int8"], values["uint8"], values["int16"], values["uint32"]) == (-2, 254, -300, 4000000000)
    assert values["decimal"] == decimal.Decimal("123.45") and values["text"] == "caf\u00e9"
    assert values["when"] == datetime.datetime.fromtimestamp(1_764_000_000, datetime.timezone.utc)
    assert values["millis"] == Unreadable("T", MILLIS), "a timestamp past year 9999 is not a crash"
    assert values["latin1"] == Unreadable("S", long_string(b"caf\xe9"))
    assert values["nested"]["at"] == Unreadable("T", MILLIS) and values["nested"]["list"][1] == 1.25
    assert values["list"] == [1, "two"] and values["nothing"] is None and values["bytes"] == b"\x00\xff"


@pytest.mark.parametrize("raw", [b"\0\0\0\x05ab", b"\0\0\0\x03\x01aZ", b"\0\0\0\x06\x01aS\0\0"])
def test_a_malformed_table_is_refused_not_misread(raw):
    with pytest.raises(ValueError):
        entries(raw)


def test_a_copy_keeps_the_senders_headers_drops_the_counts_and_adds_ours():
    sender = table(("x-delivery-count", field(b"l", (3).to_bytes(8, "big"))), *EVERY_TYPE[:10])
    raw = join_properties({"content_type": b"\x04text", "headers": sender, "delivery_mode": b"\x01",
                           "expiration": b"\x041500", "message_id": b"\x02m1"})
    copied, dropped = copy_properties(raw, drop={"x-delivery-count"}, add={"x-dead-reason": "bad"}, limit=LIMIT)
    fields = split_properties(copied)
    assert dropped == [] and "expiration" not in fields, "a parked copy must not expire unseen"
    assert fields["delivery_mode"] == b"\x02" and fields["message_id"] == b"\x02m1"
    kept = entries(fields["headers"])
    assert kept[:10] == [Entry(name.encode(), value) for name, value in EVERY_TYPE[:10]]
    assert read_table(fields["headers"]) == {**read_table(table(*EVERY_TYPE[:10])), "x-dead-reason": "bad",
                                                 "x-original-expiration": "1500"}


def test_a_copy_too_long_for_a_frame_leaves_out_the_largest_of_the_senders_headers_first():
    sender = table(("big", long_string(b"b" * 1000)), ("mid", long_string(b"m" * 500)), ("small", field(b"t", b"\1")))
    raw = join_properties({"headers": sender})
    copied, dropped = copy_properties(raw, drop=set(), add={"x-dead-reason": "r"}, limit=900)
    assert dropped == ["big (1009 bytes)"] and len(copied) <= 900
    names = [entry.name for entry in entries(split_properties(copied)["headers"])]
    assert names == [b"mid", b"small", b"x-dead-reason", b"x-dropped-headers"]
    assert read_table(split_properties(copied)["headers"])["x-dropped-headers"] == "big (1009 bytes)"


def test_thousands_of_small_headers_are_left_out_at_once_and_named_in_short():
    sender = table(*[(f"h{n:04}", long_string(b"v" * 50)) for n in range(2500)])  # 150 KB of headers
    copied, dropped = copy_properties(join_properties({"headers": sender}), drop=set(), add={"x-dead-reason": "r"},
                                      limit=LIMIT)
    assert len(copied) <= LIMIT and len(dropped) == 6 and dropped[-1].startswith("and ")
    note = read_table(split_properties(copied)["headers"])["x-dropped-headers"]
    assert note.count(";") == 5 and len(note) < 200, "at most five names, and a count"
