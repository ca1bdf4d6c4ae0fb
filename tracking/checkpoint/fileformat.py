"""The checkpoint file format: bytes in, bytes out, every byte checked.

Format v2 (written now) streams tensors into the compressor instead of serialising the
whole state first (which cost a full in-memory copy and a second pass for the checksum)::

    MAGIC (8) | version u32 = 2 | flags u32 | index offset u64 | index length u64
    | BLAKE2b-256 of the index (32) | chunk frames ... | index

The tensors' bytes form one logical stream cut into ~4 MiB chunks, each an independent
zstd frame carrying zstd's own XXH64 content checksum, computed while compressing (so no
separate checksum pass) and checked while decompressing. Independent frames let a codec
thread compress the next chunk while the writer writes the last one, and two threads
decompress at once on load (:data:`SAVE_WORKERS`, :data:`LOAD_WORKERS`). The index
(pickled plain data, covered by the header's BLAKE2b) holds the format options, the chunk
table, each tensor's dtype and shape, and the rest of the state pickled with tensors
replaced by references. Flag bit 0 (also
``options["shuffle"]``) says floating tensors were split into byte planes per chunk before
compression (the exponent bytes of float32 weights compress, the mantissa bytes do not:
0.83x instead of 0.91x of ``torch.save``'s size). Format v1 (``MAGIC | version u32 = 1 |
payload length u64 | BLAKE2b of payload | zstd(torch.save bytes)``) still loads.

A checksum says a file is whole, not who wrote it: the index, the skeleton and a format-1
payload all unpickle through :mod:`~tracking.checkpoint.allowlist`.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import threading
from typing import Any, Callable, Mapping

from tracking.checkpoint.allowlist import is_trusted, restricted_loads, scan, torch_load
from tracking.checkpoint.chunks import gather, in_order, plan_chunks, scatter, shufflable
from tracking.checkpoint.errors import CheckpointError, SaveCancelled, UnsafeCheckpoint
from tracking.checkpoint.snapshot import byte_view

MAGIC = b"LABRUNCK"
VERSION = 2
HEADER_V1 = struct.Struct("<8sIQ32s")         # v1
HEADER_V2 = struct.Struct("<8sIIQQ32s")       # v2: magic, version, flags, index offset/length, digest
PREFIX = struct.Struct("<8sI")
FLAG_SHUFFLE = 1

LEVEL = 1
"""zstd level. Measured on the 10M-parameter Adam state (bench/checkpoint.py, 2 cores):
level 1 and 2 give the same size within 0.5% (0.83x with byte planes), level 3 costs twice
the time for a larger file; negative (fast) levels leave float mantissas uncompressed."""

SAVE_WORKERS = 1
"""Threads that compress chunks, beside the writer thread that writes them. Measured with
``bench/checkpoint.py`` on this 2-core machine (120 MB, load average ~2): one thread saves
at ~630 MB/s best, two at ~550 (shuffling and compressing on both cores contend for memory
and for the core the other agents use), and zstd's own ``threads=-1`` was slower than one
thread (336 vs 784 MB/s). One thread also leaves the other core to the training it runs
beside."""

LOAD_WORKERS = 2
"""Threads that decompress chunks on load: nothing else runs then; two load at ~1,190 MB/s
best against ~1,080 for one."""

CHUNK = 4 << 20
"""Uncompressed bytes per frame: large enough that zstd reaches full speed and ratio,
small enough that two threads share a 120 MB state evenly and memory in flight stays small."""


class _Pickler(pickle.Pickler):
    """Pickles the state's structure; dense tensors become references into the chunk stream."""

    def __init__(self, fh: Any, tensors: list) -> None:
        super().__init__(fh, protocol=4)
        self.tensors = tensors
        self.seen: dict[int, int] = {}  # a tensor held twice is stored once, and loads shared

    def persistent_id(self, obj: Any) -> Any:
        import torch

        if type(obj) is torch.Tensor and obj.layout == torch.strided and not obj.is_quantized \
                and obj.device.type == "cpu" and obj.is_contiguous():
            if id(obj) not in self.seen:
                self.seen[id(obj)] = len(self.tensors)
                self.tensors.append(obj)
            return self.seen[id(obj)]
        return None


def write_stream(state: Mapping[str, Any], fh: Any, *, level: int = LEVEL, shuffle: bool = True,
                 workers: int = SAVE_WORKERS, chunk: int = CHUNK,
                 cancel: threading.Event | None = None, source: str = "<checkpoint>") -> int:
    """Write ``state`` as a v2 file into the seekable binary ``fh``; returns its size.

    ``cancel`` set while writing stops between chunks with :class:`SaveCancelled`. A state
    the loader would refuse (:mod:`~tracking.checkpoint.allowlist`) is refused here, before
    a byte is written, with :class:`UnsafeCheckpoint`.
    """
    import zstandard

    if getattr(state, "deferred", None) is not None:
        state.deferred.copy()
    tensors: list = []
    skel = io.BytesIO()
    _Pickler(skel, tensors).dump(dict(state))
    _refuse_unloadable(state, skel.getvalue(), source)
    views = [byte_view(t) for t in tensors]
    shuffled = [shuffle and shufflable(t) for t in tensors]
    sizes = [t.element_size() for t in tensors]
    plan = plan_chunks(tensors, chunk)
    local = threading.local()

    def encode(segs):
        if cancel is not None and cancel.is_set():
            raise SaveCancelled("checkpoint save cancelled")
        if not hasattr(local, "cctx"):
            local.cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
        return local.cctx.compress(gather(segs, views, shuffled, sizes))

    fh.write(bytes(HEADER_V2.size))
    offset, table = HEADER_V2.size, []
    for segs, frame in zip(plan, in_order(encode, plan, workers)):
        fh.write(frame)
        table.append((offset, len(frame), sum(s[2] for s in segs), segs))
        offset += len(frame)
    index = pickle.dumps({
        "options": {"codec": "zstd", "level": level, "shuffle": bool(shuffle), "chunk": chunk,
                    "checksum": "zstd-xxh64 per frame, blake2b-256 of the index"},
        "tensors": [(str(t.dtype).replace("torch.", ""), tuple(t.shape), s)
                    for t, s in zip(tensors, shuffled)],
        "chunks": table, "skeleton": skel.getvalue()}, protocol=4)
    fh.write(index)
    fh.seek(0)
    fh.write(HEADER_V2.pack(MAGIC, 2, FLAG_SHUFFLE if shuffle else 0, offset, len(index),
                            hashlib.blake2b(index, digest_size=32).digest()))
    fh.seek(0, os.SEEK_END)
    return offset + len(index)


def _refuse_unloadable(state: Mapping[str, Any], skeleton: bytes, source: str) -> None:
    """The save-side half of the allow-list: name the global and the entry that holds it."""
    if is_trusted():
        return
    try:
        scan(skeleton, source=source)
    except UnsafeCheckpoint as exc:
        where = ", ".join(_where(state, exc.global_name))
        raise exc.when_saving(f"{source} ({where})" if where else source) from None


def _where(state: Mapping[str, Any], name: str) -> list[str]:
    """The entries (``objects.trainer``, ``extra.loop``) whose pickle names ``name``."""
    found = []
    for key, value in state.items():
        inner = value.items() if key in ("objects", "extra") and isinstance(value, Mapping) else [(None, value)]
        found += [str(key) if sub is None else f"{key}.{sub}" for sub, v in inner if _holds(v, name)]
    return found


def _holds(value: Any, name: str) -> bool:
    buf = io.BytesIO()
    try:
        _Pickler(buf, []).dump(value)
        scan(buf.getvalue(), source="")
    except UnsafeCheckpoint as exc:
        return exc.global_name == name
    except Exception:
        return False
    return False


def dumps(state: Mapping[str, Any], level: int = LEVEL) -> bytes:
    buf = io.BytesIO()
    write_stream(state, buf, level=level)
    return buf.getvalue()


def loads(blob: bytes, *, source: str = "<bytes>", workers: int = LOAD_WORKERS, trusted: bool | None = None) -> dict:
    """Read a v1 or v2 file's bytes; any damage is a :class:`CheckpointError`, a global off the
    allow-list an :class:`UnsafeCheckpoint` (``trusted``: no allow-list, see :func:`is_trusted`)."""
    if len(blob) < PREFIX.size:
        raise CheckpointError(f"{source}: truncated ({len(blob)} bytes, header is {HEADER_V2.size})")
    magic, version = PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{source}: not a labrun checkpoint (bad magic)")
    if version > VERSION:
        raise CheckpointError(f"{source}: format v{version} is newer than this labrun (v{VERSION})")
    if version == 1:
        return _loads_v1(blob, source, trusted)
    return _loads_v2(blob, source, workers, trusted)


def _loads_v1(blob: bytes, source: str, trusted: bool | None) -> dict:
    import zstandard

    if len(blob) < HEADER_V1.size:
        raise CheckpointError(f"{source}: truncated ({len(blob)} bytes, header is {HEADER_V1.size})")
    _, _, length, digest = HEADER_V1.unpack_from(blob)
    payload = memoryview(blob)[HEADER_V1.size:]  # no 100 MB copy
    if len(payload) != length:
        raise CheckpointError(f"{source}: truncated ({len(payload)} of {length} payload bytes)")
    if hashlib.blake2b(payload, digest_size=32).digest() != digest:
        raise CheckpointError(f"{source}: checksum mismatch (file corrupted)")
    raw = zstandard.ZstdDecompressor().decompress(payload)
    return torch_load(raw, source=source, trusted=trusted)  # a checksum is no signature


def read_index(head: bytes, read: Callable[[int, int], Any], size: int, source: str) -> dict:
    if len(head) < HEADER_V2.size:
        raise CheckpointError(f"{source}: truncated ({size} bytes, header is {HEADER_V2.size})")
    _, _, _flags, offset, length, digest = HEADER_V2.unpack_from(head)
    if offset == 0 or offset + length > size:
        raise CheckpointError(f"{source}: truncated ({size} of {offset + length} bytes)")
    index = read(offset, length)
    if hashlib.blake2b(index, digest_size=32).digest() != digest:
        raise CheckpointError(f"{source}: checksum mismatch (file corrupted: index)")
    index = restricted_loads(bytes(index), source=source, trusted=False)   # plain data only
    if not isinstance(index, dict) or not {"tensors", "chunks", "skeleton", "options"} <= set(index):
        raise CheckpointError(f"{source}: damaged (no table of contents)")
    return index


def decode(index: dict, read_into: Callable[[int, Any], None], source: str, workers: int,
           trusted: bool | None = None) -> dict:
    """Rebuild the state: each worker reads a frame into its own buffer and decompresses
    it straight into the tensors (through a scratch buffer when it must un-shuffle)."""
    import numpy as np
    import torch
    import zstandard

    dtypes = [getattr(torch, dtype, None) for dtype, _, _ in index["tensors"]]
    if not all(isinstance(d, torch.dtype) for d in dtypes):
        raise CheckpointError(f"{source}: damaged (an unknown tensor dtype)")
    tensors = [torch.empty(shape, dtype=d) for d, (_, shape, _) in zip(dtypes, index["tensors"])]
    views = [byte_view(t) if t.numel() else None for t in tensors]
    shuffled = [s for _, _, s in index["tensors"]]
    sizes = [t.element_size() for t in tensors]
    local = threading.local()

    def decode_chunk(entry):
        offset, csize, usize, segs = entry
        if not hasattr(local, "dctx"):
            local.dctx, local.frame, local.raw = zstandard.ZstdDecompressor(), bytearray(), bytearray()
        if len(local.frame) < csize:
            local.frame = bytearray(csize)
        frame = memoryview(local.frame)[:csize]
        read_into(offset, frame)
        direct = len(segs) == 1 and not shuffled[segs[0][0]]
        if direct:
            ti, off, n = segs[0]
            out = views[ti][off:off + n]
        else:
            if len(local.raw) < usize:
                local.raw = bytearray(usize)
            out = np.frombuffer(local.raw, dtype=np.uint8, count=usize)
        _decompress_into(local.dctx, frame, out, source, offset)
        if not direct:
            scatter(out, segs, views, shuffled, sizes)

    for _ in in_order(decode_chunk, index["chunks"], workers):
        pass
    return restricted_loads(index["skeleton"], source=source, tensors=tensors, trusted=trusted)


def _decompress_into(dctx: Any, frame: Any, out: Any, source: str, offset: int) -> None:
    """Decompress one frame into ``out`` exactly; zstd checks the frame's XXH64 at its end."""
    import zstandard

    target, got = memoryview(out).cast("B"), 0
    try:
        with dctx.stream_reader(frame, read_across_frames=False) as reader:
            while got < len(target):
                n = reader.readinto(target[got:])
                if not n:
                    break
                got += n
            extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise CheckpointError(f"{source}: checksum mismatch (file corrupted: chunk at byte {offset}: "
                              f"{exc})") from None
    if got != len(target) or extra:
        raise CheckpointError(f"{source}: checksum mismatch (chunk at byte {offset} does not hold "
                              f"{len(target)} bytes)")


def _loads_v2(blob: bytes, source: str, workers: int, trusted: bool | None) -> dict:
    data = memoryview(blob)

    def read_into(offset: int, buf: Any) -> None:
        buf[:] = data[offset:offset + len(buf)]

    index = read_index(blob[:HEADER_V2.size], lambda o, n: data[o:o + n], len(blob), source)
    return decode(index, read_into, source, workers, trusted)
