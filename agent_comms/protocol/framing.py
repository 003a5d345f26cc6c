"""Length-prefixed framing: a 4-byte big-endian length, then one msgpack-encoded :data:`~.wire.Frame`.

:class:`FrameDecoder` is a buffer you feed bytes as they arrive (split anywhere, even one byte at a time) and that
yields whole frames. A length over the cap, bytes that are not a valid frame, or a frame of the wrong type raise
:class:`~.errors.RemoteProtocolError`; nothing is ever silently dropped. After an error the decoder is poisoned:
the link must be closed, since the stream can no longer be trusted to be in sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final, NoReturn

import msgspec

from .errors import RemoteProtocolError
from .ops import Op
from .wire import Frame, Ops

__all__ = ["DEFAULT_MAX_FRAME", "FrameDecoder", "encode_frame", "encode_frames", "encode_op", "encode_ops_frames"]

#: Default cap on the size of one frame's body (1 MiB).
DEFAULT_MAX_FRAME: Final = 1 << 20

_HEADER: Final = 4
_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytes:
    """Encode one frame, length prefix included."""
    body = _encoder.encode(frame)
    return len(body).to_bytes(_HEADER, "big") + body


def encode_frames(frames: Iterable[Frame]) -> bytes:
    """Encode several frames into one buffer (for one coalesced write)."""
    out = bytearray()
    for frame in frames:
        body = _encoder.encode(frame)
        out += len(body).to_bytes(_HEADER, "big")
        out += body
    return bytes(out)


_OPS_PREFIX: Final = _encoder.encode(Ops(()))[:-1]  # the frame's tag, up to the array of operations
assert _encoder.encode(Ops(())).endswith(b"\x90"), "an Ops frame is [tag, [op, ...]]"


def encode_op(op: Op) -> bytes:
    """One operation as it appears inside an ``Ops`` frame (see :func:`encode_ops_frames`)."""
    return _encoder.encode(op)


def encode_ops_frames(encoded: Sequence[bytes], max_body: int) -> bytes:
    """Operations encoded by :func:`encode_op`, as ``Ops`` frames (length prefixes included) of at most
    ``max_body`` bytes each, unless one operation alone is larger: the same bytes as :func:`encode_frames` of
    those frames, with no operation encoded twice."""
    out = bytearray()
    start = 0
    while start < len(encoded):
        end, size = start + 1, len(encoded[start])
        while end < len(encoded) and size + len(encoded[end]) <= max_body:
            size += len(encoded[end])
            end += 1
        count = end - start
        if count < 16:
            header = bytes((0x90 | count,))
        elif count < 1 << 16:
            header = b"\xdc" + count.to_bytes(2, "big")
        else:
            header = b"\xdd" + count.to_bytes(4, "big")
        out += (len(_OPS_PREFIX) + len(header) + size).to_bytes(_HEADER, "big")
        out += _OPS_PREFIX
        out += header
        for op in encoded[start:end]:
            out += op
        start = end
    return bytes(out)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, then take complete frames with :meth:`next_frame` or
    :meth:`frames`."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._offset = 0
        self._failed: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed as part of a complete frame."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. An empty ``data`` is allowed and does nothing."""
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Raises :class:`RemoteProtocolError` on an oversized length, a malformed body or an unknown frame type,
        and again on every later call (the stream is out of sync for good).
        """
        if self._failed is not None:
            raise self._failed
        buf = self._buffer
        start = self._offset
        if len(buf) - start < _HEADER:
            return None
        size = int.from_bytes(buf[start : start + _HEADER], "big")
        if size > self.max_frame:
            self._fail(f"frame of {size} bytes exceeds the cap of {self.max_frame} bytes", "oversized")
        end = start + _HEADER + size
        if len(buf) < end:
            return None
        try:
            with memoryview(buf) as view, view[start + _HEADER : end] as body:
                frame = _decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec reports bad UTF-8 as the latter
            self._fail(f"malformed frame: {exc}", "malformed")
        if end == len(buf):
            buf.clear()
            self._offset = 0
        elif end > 65536 and end * 2 > len(buf):
            del buf[:end]
            self._offset = 0
        else:
            self._offset = end
        return frame

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame in the buffer, in order (see :meth:`next_frame` for errors)."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _fail(self, message: str, reason: str) -> NoReturn:
        self._failed = RemoteProtocolError(message, reason=reason)
        raise self._failed
