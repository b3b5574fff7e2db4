"""Megatron-Core indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``), written without importing megatron-core.

The format is that of ``megatron.core.datasets.indexed_dataset`` (``_IndexWriter``; megatron-core 0.16.1):

* ``.bin``: every sequence's token ids back to back, in the index's dtype, no header.
* ``.idx``: ``b"MMIDIDX\\x00\\x00"``, version ``<Q`` 1, dtype code ``<B`` (uint8 1, int8 2, int16 3, int32 4,
  int64 5, float64 6, float32 7, uint16 8), sequence count ``<Q``, document count ``<Q``, then the sequence
  lengths (int32), the sequences' byte offsets into ``.bin`` (int64), and the document indices (int64: the
  sequence index where each document starts, plus the total; ``[0, 1, ..., n]`` when every document is one
  sequence). No sequence modes (a text dataset is not multimodal).

As Megatron's ``tools/preprocess_data.py --append-eod`` does, one document is one sequence: its tokens followed by
the end-of-document id. The tests read every exported prefix back with megatron-core's own ``IndexedDataset``.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from curation.io.atomic import atomic_open

IDX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8}
_CHUNK = 8 << 20


def idx_bytes(lengths: np.ndarray, dtype: str) -> bytes:
    """The ``.idx`` file of a prefix whose documents (one sequence each) have ``lengths`` tokens."""
    lengths = np.asarray(lengths, dtype=np.int64)
    itemsize = np.dtype(dtype).itemsize
    pointers = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1] * itemsize, out=pointers[1:])
    head = IDX_HEADER + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype])
    head += struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(lengths) + 1)
    return b"".join([head, lengths.astype(np.int32).tobytes(), pointers.tobytes(),
                     np.arange(len(lengths) + 1, dtype=np.int64).tobytes()])


def read_idx(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(dtype, lengths, pointers, document_indices)`` of an ``.idx`` file; ValueError when malformed."""
    data = path.read_bytes()
    fixed = len(IDX_HEADER) + 8 + 1 + 8 + 8
    if len(data) < fixed or not data.startswith(IDX_HEADER):
        raise ValueError(f"{path}: not a Megatron index (header)")
    version, code = struct.unpack_from("<QB", data, len(IDX_HEADER))
    n_seq, n_doc = struct.unpack_from("<QQ", data, len(IDX_HEADER) + 9)
    names = {v: k for k, v in DTYPE_CODES.items()}
    if version != 1 or code not in names:
        raise ValueError(f"{path}: unsupported version {version} or dtype code {code}")
    if len(data) != fixed + n_seq * (4 + 8) + n_doc * 8:
        raise ValueError(f"{path}: {len(data)} bytes, not what {n_seq} sequences and {n_doc} documents take")
    lengths = np.frombuffer(data, np.int32, n_seq, fixed)
    pointers = np.frombuffer(data, np.int64, n_seq, fixed + 4 * n_seq)
    docs = np.frombuffer(data, np.int64, n_doc, fixed + 12 * n_seq)
    return names[code], lengths, pointers, docs


def flat_tokens(tokens: list[list[int]], eod: int, dtype: str) -> np.ndarray:
    """Each document's ids followed by ``eod``, back to back (what ``.bin`` holds for them)."""
    flat: list[int] = []
    extend, append = flat.extend, flat.append
    for t in tokens:  # list.extend copies references in C; one conversion of the whole list below
        extend(t)
        append(eod)
    return np.array(flat, dtype=dtype)


def concat_files(parts: list[Path], out: BinaryIO) -> tuple[int, str]:
    """Copy ``parts`` into ``out`` in order; ``(bytes, sha256)`` of what was written (hashed while copying)."""
    h, size = hashlib.sha256(), 0
    for p in parts:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
    return size, h.hexdigest()


def write_prefix(root: Path, prefix_rel: str, parts: list[Path], lengths: np.ndarray,
                 dtype: str) -> list[dict[str, object]]:
    """Publish ``PREFIX.bin`` (the part files concatenated) and ``PREFIX.idx``; their file entries."""
    entries = []
    with atomic_open(root / f"{prefix_rel}.bin") as fh:
        size, sha = concat_files(parts, fh)
    expected = int(np.asarray(lengths, dtype=np.int64).sum()) * np.dtype(dtype).itemsize
    if size != expected:  # the parts and the index parts disagree: never publish an index that misreads the bin
        raise ValueError(f"{prefix_rel}.bin: {size} bytes from the parts, the index says {expected}")
    entries.append({"path": f"{prefix_rel}.bin", "bytes": size, "sha256": sha})
    idx = idx_bytes(lengths, dtype)
    with atomic_open(root / f"{prefix_rel}.idx") as fh:
        fh.write(idx)
    entries.append({"path": f"{prefix_rel}.idx", "bytes": len(idx), "sha256": hashlib.sha256(idx).hexdigest()})
    return entries
