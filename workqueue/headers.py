"""Message properties and header tables as the sender wrote them, byte for byte (AMQP 0-9-1, section 4.2.5).

pika turns a header table into Python values and back, and loses on the way what does not survive the trip:
pika 1.4 reads a double (2.5) or a float as an integer, writes back an 8-bit integer as a 32-bit one and a
string that is not UTF-8 as bytes, cannot write a float at all, and drops the connection on a timestamp out
of Python's range (milliseconds, as Java and JavaScript senders sometimes write; see RabbitMQ's notes on
other clients). A parked or retried copy must keep what the sender wrote, so it is made from the bytes:
the sender's headers are kept as they came, and only ours are added.

Pure functions of bytes; read_table's values are for reading counts and reasons, never for writing back.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import NamedTuple

import pika.data

# The fixed size in bytes of each field type's value (AMQP 0-9-1 with RabbitMQ's errata: 's' and 'U' are both
# a signed 16-bit integer, 'l' and 'L' a signed 64-bit one).
FIXED_SIZES = {b"t": 1, b"b": 1, b"B": 1, b"U": 2, b"u": 2, b"s": 2, b"I": 4, b"i": 4, b"L": 8, b"l": 8,
               b"f": 4, b"d": 8, b"D": 5, b"T": 8, b"V": 0}
# The types whose value starts with a 32-bit length: long strings, byte arrays, arrays and tables.
SIZED = {b"S", b"x", b"A", b"F"}
# The basic properties in their wire order, each with its flag bit and its kind of value.
PROPERTIES = (("content_type", 15, "short"), ("content_encoding", 14, "short"), ("headers", 13, "table"),
              ("delivery_mode", 12, "octet"), ("priority", 11, "octet"), ("correlation_id", 10, "short"),
              ("reply_to", 9, "short"), ("expiration", 8, "short"), ("message_id", 7, "short"),
              ("timestamp", 6, "long"), ("type", 5, "short"), ("user_id", 4, "short"), ("app_id", 3, "short"),
              ("cluster_id", 2, "short"))


class Entry(NamedTuple):
    """One header as it was written: its name and its value's bytes, type octet first."""

    name: bytes
    value: bytes


class Unreadable(NamedTuple):
    """A header value Python cannot hold as it is (a timestamp out of range): its type and its bytes."""

    kind: str
    raw: bytes


def value_end(data: bytes, offset: int) -> int:
    """Where the field value starting at `offset` (its type octet) ends; ValueError if it cannot be told."""
    kind = data[offset:offset + 1]
    if kind in FIXED_SIZES:
        end = offset + 1 + FIXED_SIZES[kind]
    elif kind in SIZED:
        if offset + 5 > len(data):
            raise ValueError("a header value is cut short")
        end = offset + 5 + int.from_bytes(data[offset + 1:offset + 5], "big")
    else:
        raise ValueError(f"unknown header type {kind!r}")
    if end > len(data):
        raise ValueError("a header value is cut short")
    return end


def entries(table: bytes) -> list[Entry]:
    """The entries of an encoded field table (its 32-bit length first), in order; ValueError if malformed."""
    if len(table) < 4 or int.from_bytes(table[:4], "big") != len(table) - 4:
        raise ValueError("the header table's length is wrong")
    found, offset = [], 4
    while offset < len(table):
        end_of_name = offset + 1 + table[offset]
        end = value_end(table, end_of_name)
        found.append(Entry(table[offset + 1:end_of_name], table[end_of_name:end]))
        offset = end
    return found


def encode_table(table_entries: list[Entry]) -> bytes:
    body = b"".join(bytes([len(entry.name)]) + entry.name + entry.value for entry in table_entries)
    return len(body).to_bytes(4, "big") + body


def encode_value(value: object) -> bytes:
    """One of our own header values (a string or a whole number), encoded as pika encodes it."""
    pieces: list[bytes] = []
    pika.data.encode_value(pieces, value)
    return b"".join(pieces)


def entry(name: str, value: object) -> Entry:
    return Entry(name.encode(), encode_value(value))


def read_value(raw: bytes) -> object:
    """A value's bytes as a Python value, for reading; what Python cannot hold as it is comes back Unreadable."""
    kind, payload = raw[:1], raw[1:]
    if kind == b"F":
        return read_table(raw[1:])
    if kind == b"A":
        values, offset = [], 5
        while offset < len(raw):
            end = value_end(raw, offset)
            values.append(read_value(raw[offset:end]))
            offset = end
        return values
    if kind in (b"S", b"x"):
        text = payload[4:]
        if kind == b"S":
            try:
                return text.decode()
            except UnicodeDecodeError:
                return Unreadable("S", raw)
        return text
    unpack = {b"t": ">?", b"b": ">b", b"B": ">B", b"U": ">h", b"u": ">H", b"s": ">h", b"I": ">i", b"i": ">I",
              b"L": ">q", b"l": ">q", b"f": ">f", b"d": ">d"}
    if kind in unpack:
        return struct.unpack(unpack[kind], payload)[0]
    if kind == b"D":
        return decimal.Decimal(int.from_bytes(payload[1:], "big", signed=True)).scaleb(-payload[0])
    if kind == b"T":
        try:
            return datetime.datetime.fromtimestamp(int.from_bytes(payload, "big"), datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return Unreadable("T", raw)
    return None  # 'V': void


def read_table(table: bytes) -> dict[str, object]:
    """An encoded field table as a dict, every value read as read_value reads it; ValueError if malformed."""
    return {item.name.decode(errors="replace"): read_value(item.value) for item in entries(table)}


# ---------------------------------------------------------------- the basic properties


def split_properties(raw: bytes) -> dict[str, bytes]:
    """The encoded basic properties of a content header as {name: the value's bytes}; ValueError if malformed."""
    if len(raw) < 2:
        raise ValueError("the properties are cut short")
    flags = int.from_bytes(raw[:2], "big")
    if flags & 1:
        raise ValueError("more than one flag word: not a basic.properties of AMQP 0-9-1")
    fields, offset = {}, 2
    for name, bit, kind in PROPERTIES:
        if not flags & (1 << bit):
            continue
        if offset + (4 if kind == "table" else 1) > len(raw):
            raise ValueError(f"the property {name} is cut short")
        if kind == "short":
            end = offset + 1 + raw[offset]
        elif kind == "table":
            end = offset + 4 + int.from_bytes(raw[offset:offset + 4], "big")
        else:
            end = offset + (1 if kind == "octet" else 8)
        if end > len(raw):
            raise ValueError(f"the property {name} is cut short")
        fields[name] = raw[offset:end]
        offset = end
    return fields


def join_properties(fields: dict[str, bytes]) -> bytes:
    """Encoded basic properties from {name: the value's bytes}, as split_properties gives them."""
    flags = sum(1 << bit for name, bit, _ in PROPERTIES if name in fields)
    return flags.to_bytes(2, "big") + b"".join(fields[name] for name, _, _ in PROPERTIES if name in fields)


def short_text(raw_field: bytes) -> str:
    """A short-string property's text, from its bytes (length octet first)."""
    return raw_field[1:].decode(errors="replace")


# Headers left out of a copy that are named in its x-dropped-headers, at most; the rest are counted.
DROPPED_NAMES = 5


def copy_properties(raw: bytes, drop: set[str], add: dict[str, object], limit: int) -> tuple[bytes, list[str]]:
    """The encoded properties of a persistent copy of a message: its sender's headers as they came, less `drop`,
    and ours (`add`) after them. A per-message TTL becomes the header x-original-expiration: a parked copy must
    not expire unseen. If the result is longer than `limit` bytes (it must fit one content header frame), the
    sender's largest headers are left out until it fits, and named in x-dropped-headers.

    Returns the properties (longer than `limit` only if ours alone do not fit), and what was left out, as
    "name (N bytes)" each. Raises ValueError if `raw` is not encoded basic properties.
    """
    fields = split_properties(raw)
    fields["delivery_mode"] = bytes([2])
    ours = dict(add)
    if "expiration" in fields:
        ours["x-original-expiration"] = short_text(fields.pop("expiration"))
    names = {name.encode() for name in ours} | {name.encode() for name in drop}
    theirs = [item for item in entries(fields.get("headers", b"\0\0\0\0")) if item.name not in names]
    mine = [entry(name, value) for name, value in ours.items()]
    fields["headers"] = encode_table(theirs + mine)
    properties = join_properties(fields)
    if len(properties) <= limit:
        return properties, []
    # Left out largest first, the sender's headers only; each takes its name, the name's length octet and its value.
    size = {id(item): 1 + len(item.name) + len(item.value) for item in theirs}
    largest_first = sorted(theirs, key=lambda item: size[id(item)], reverse=True)
    dropped: list[Entry] = []
    over = len(properties) - limit
    while largest_first and over > 0:  # by their sizes first, then one at a time while the note takes room
        item = largest_first.pop(0)
        dropped.append(item)
        over -= size[id(item)]
    while not fits(fields, theirs, mine, dropped, size, limit) and largest_first:
        dropped.append(largest_first.pop(0))
    return join_properties(fields), dropped_names(dropped, size)


def dropped_names(dropped: list[Entry], size: dict[int, int]) -> list[str]:
    named = [f"{item.name.decode(errors='replace')} ({size[id(item)]} bytes)" for item in dropped[:DROPPED_NAMES]]
    return named + ([f"and {len(dropped) - DROPPED_NAMES} more"] if len(dropped) > DROPPED_NAMES else [])


def fits(fields: dict[str, bytes], theirs: list[Entry], mine: list[Entry], dropped: list[Entry],
         size: dict[int, int], limit: int) -> bool:
    """Whether the properties fit `limit` with `dropped` left out and named in x-dropped-headers; sets
    fields["headers"] to that table."""
    gone = {id(item) for item in dropped}
    note = [entry("x-dropped-headers", "; ".join(dropped_names(dropped, size)))] if dropped else []
    fields["headers"] = encode_table([item for item in theirs if id(item) not in gone] + mine + note)
    return len(join_properties(fields)) <= limit
