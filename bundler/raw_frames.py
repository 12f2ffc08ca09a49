"""Large members that do not compress go around the compressor, as zstd frames of raw blocks.

Most large packs are compressed already (a vulnerability DB's .tar.gz, a quantized model, an
image layer): zstd spends CPU on them finding nothing, then stores their bytes as raw blocks
anyway. Here a member's bytes are sampled as they pass (the first
SAMPLE bytes of every SEGMENT); where the samples stop compressing, the compressor's frame is
ended and the bytes are written straight to the archive's parts as a frame of raw blocks, until
they compress again. The archive stays one valid .tar.zst: zstd, `tar -I zstd` and sideload
read concatenated frames as one stream.

The frame (RFC 8878, 3.1.1): the magic number; a header with no content size, no checksum
and no dictionary, and a 128 KiB window; raw blocks of at most 128 KiB, each after a 3-byte
little-endian header (bit 0: last block, bits 1-2: type 0 = raw, bits 3-23: size); an empty last
block. Such a frame has no checksum of its own: every member's sha256 is in the signed manifest
and every part's in the signed checksum list.

The route is chosen at fixed offsets of the member, from its bytes alone, so the same member
gives the same archive however the network cut it into reads.
"""

from __future__ import annotations

from typing import BinaryIO

import zstandard

LARGE_MEMBER = 8 << 20  # smaller members always go through the compressor
SEGMENT = 1 << 20  # the route is chosen for each MiB of a member ...
SAMPLE = 16 << 10  # ... from its first bytes, compressed at the archive's level
RAW_ABOVE = 0.98  # a sample that keeps more than this of its size does not compress
SWITCH_AFTER = 4  # segments in a row that disagree with the route before it changes (no flapping)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FRAME_HEADER = ZSTD_MAGIC + bytes([0x00, 7 << 3])  # descriptor: all flags 0; window 2**(10+7) = 128 KiB
BLOCK = 128 << 10  # the largest block a frame with that window may hold


def block_header(size: int, *, last: bool = False) -> bytes:
    return (size << 3 | last).to_bytes(3, "little")  # block type 0: raw


_LAST_EMPTY_BLOCK = block_header(0, last=True)


class RawFrame:
    """One frame of raw blocks written to `out`: blocks of BLOCK bytes, shorter only where a segment ends."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.block_left = 0  # bytes still to come of the block whose header was written
        out.write(FRAME_HEADER)

    def write(self, view: memoryview, remaining: int) -> None:
        """`remaining`: the bytes from the start of `view` to the next place the route may change
        (the end of the segment), so that no block crosses it."""
        while view:
            if not self.block_left:
                self.block_left = min(BLOCK, remaining)
                self.out.write(block_header(self.block_left))
            piece = view[: self.block_left]
            self.out.write(piece)
            self.block_left -= len(piece)
            remaining -= len(piece)
            view = view[len(piece):]

    def end(self) -> None:
        self.out.write(_LAST_EMPTY_BLOCK)


class MemberRoute:
    """A large member's bytes as TarWriter writes them: into the zstd writer `zst` while they
    compress, else around it into `parts` (where `zst` writes) as raw frames. `end()` after the
    member's last byte."""

    def __init__(self, zst, parts: BinaryIO, size: int, level: int):
        self.zst, self.parts = zst, parts
        self.probe = zstandard.ZstdCompressor(level=level, write_content_size=False)
        self.left = size  # bytes of the member not routed yet
        self.segment_left = 0
        self.sample = bytearray()  # the segment's first bytes, held until its route is chosen
        self.sample_left = 0
        self.raw: RawFrame | None = None
        self.chosen = False  # the first segment chooses alone; later ones need SWITCH_AFTER in a row
        self.contrary = 0

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            if not self.segment_left:
                if not self.left:
                    raise ValueError("more bytes than the member's size")  # Copy's cap stops them before
                self.segment_left = min(SEGMENT, self.left)
                self.sample_left = min(SAMPLE, self.segment_left)
            if self.sample_left:
                taken = view[: self.sample_left]
                self.sample += taken
                self.sample_left -= len(taken)
                view = view[len(taken):]
                if not self.sample_left:
                    self._choose(self.sample)
                    self._flush_sample()
                continue
            piece = view[: self.segment_left]
            self._route(piece)
            view = view[len(piece):]
        return len(data)

    def flush(self) -> None:
        """Nothing: the compressor is flushed once, when the archive closes (see writer._NoFlush)."""

    def end(self) -> None:
        self._flush_sample()  # only when the member came short: the archive fails on it anyway
        if self.raw is not None:
            self.raw.end()
            self.raw = None

    def _flush_sample(self) -> None:
        sample, self.sample = self.sample, bytearray()
        if sample:
            self._route(memoryview(bytes(sample)))

    def _route(self, piece: memoryview) -> None:
        if self.raw is not None:
            self.raw.write(piece, self.segment_left)
        else:
            self.zst.write(piece)
        self.left -= len(piece)
        self.segment_left -= len(piece)

    def _choose(self, sample: bytearray) -> None:
        stored = len(self.probe.compress(sample)) > len(sample) * RAW_ABOVE
        if stored == (self.raw is not None):
            self.contrary = 0
        elif not self.chosen or self.contrary + 1 >= SWITCH_AFTER:
            self._switch(stored)
            self.contrary = 0
        else:
            self.contrary += 1
        self.chosen = True

    def _switch(self, stored: bool) -> None:
        if stored:
            self.zst.flush(zstandard.FLUSH_FRAME)  # what the compressor holds goes out first, as its own frame
            self.raw = RawFrame(self.parts)
        else:
            self.raw.end()
            self.raw = None  # the compressor's next write starts a new frame
