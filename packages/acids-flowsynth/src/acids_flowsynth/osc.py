"""A minimal OSC 1.0 message codec (no bundles): what the FlowSynth server and its tests need.

Arguments: ``int`` → ``i`` (int32), ``float`` → ``f`` (float32), ``str`` → ``s``, ``bytes`` → ``b``,
``bool`` → ``T``/``F``. Decoding also reads ``d`` (float64) and ``h`` (int64), which some senders use.
"""

from __future__ import annotations

import struct
from typing import Any


class OSCError(ValueError):
    """A malformed OSC packet."""


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (4 - len(b) % 4)  # strings always get at least one NUL


def _blob(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b + b"\0" * (-len(b) % 4)


def encode(address: str, *args: Any) -> bytes:
    """One OSC message."""
    if not address.startswith("/"):
        raise OSCError(f"an OSC address starts with '/': {address!r}")
    tags, data = [","], []
    for a in args:
        if isinstance(a, bool):
            tags.append("T" if a else "F")
        elif isinstance(a, int):
            tags.append("i")
            data.append(struct.pack(">i", a))
        elif isinstance(a, float):
            tags.append("f")
            data.append(struct.pack(">f", a))
        elif isinstance(a, str):
            tags.append("s")
            data.append(_pad(a.encode()))
        elif isinstance(a, (bytes, bytearray)):
            tags.append("b")
            data.append(_blob(bytes(a)))
        else:
            raise OSCError(f"cannot send a {type(a).__name__} in OSC")
    return _pad(address.encode()) + _pad("".join(tags).encode()) + b"".join(data)


def _string(packet: bytes, at: int) -> tuple[str, int]:
    end = packet.find(b"\0", at)
    if end < 0:
        raise OSCError("unterminated OSC string")
    return packet[at:end].decode("utf-8", errors="replace"), (end // 4 + 1) * 4


def decode(packet: bytes) -> tuple[str, list[Any]]:
    """One OSC message → (address, arguments)."""
    if not packet.startswith(b"/"):
        raise OSCError("not an OSC message (bundles are not supported)")
    address, at = _string(packet, 0)
    if at >= len(packet):
        return address, []
    tags, at = _string(packet, at)
    if not tags.startswith(","):
        raise OSCError("missing OSC type tags")
    args: list[Any] = []
    try:
        for t in tags[1:]:
            if t == "i":
                args.append(struct.unpack_from(">i", packet, at)[0])
                at += 4
            elif t == "f":
                args.append(struct.unpack_from(">f", packet, at)[0])
                at += 4
            elif t == "h":
                args.append(struct.unpack_from(">q", packet, at)[0])
                at += 8
            elif t == "d":
                args.append(struct.unpack_from(">d", packet, at)[0])
                at += 8
            elif t == "s":
                s, at = _string(packet, at)
                args.append(s)
            elif t == "b":
                (n,) = struct.unpack_from(">i", packet, at)
                args.append(packet[at + 4 : at + 4 + n])
                at += 4 + n + (-n % 4)
            elif t in "TF":
                args.append(t == "T")
            elif t == "N":
                args.append(None)
            else:
                raise OSCError(f"unsupported OSC type tag {t!r}")
    except struct.error:
        raise OSCError("truncated OSC message") from None
    return address, args
