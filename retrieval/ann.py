"""FAISS index types for the bullet vectors: exact search up to a measured size, IVF over 8-bit codes beyond.

Every kind uses the inner-product metric (the vectors are unit length, so it is the cosine). The
parameters are the ones `benchmarks/scale.py` measured against its goals (recall@10 >= 0.95,
<= 750 bytes per vector, one-thread p50 <= 5 ms) on the real 20,888 vectors alone and on
synthetic vectors shaped like them at 121k, 321k and 1.02M (figures next to each constant).
"""

from __future__ import annotations

import math
from typing import cast

import faiss

KINDS = ("flat", "hnsw-sq8", "ivf-sq8")

# Exact search (IndexFlatIP, 1,536 bytes per 384-dim vector) while its one-thread p50 stays
# within 5 ms: 1.9 ms at the real 20,888 vectors, EXACT_PLACEHOLDER.
EXACT_UP_TO = 50_000

IVF_LISTS_PER_SQRT_N = 4  # nlist = 4 * sqrt(n): 4,042 lists at 1.02M vectors
IVF_TRAIN_PER_LIST = 40  # train on at least this many vectors per list (kmeans warns below 39)
# (index size, nprobe): the smallest nprobe that met recall@10 >= 0.95 at that size (the real
# queries at 20,888; the synthetic ones above). 1.02M: nprobe 96 gives 0.956 at p50 4.3 ms,
# 398 bytes per vector, built (trained + added) in 114 s on one thread.
IVF_NPROBE: tuple[tuple[int, int], ...] = ((20_888, 384), (121_055, 192), (321_055, 96), (1_021_055, 96))

HNSW_M = 32  # 64 links per vector on level 0: 256 bytes + 384 of SQ8 codes = 656 bytes per vector
# efConstruction at 121k vectors, efSearch 256 on the synthetic queries: 40 -> 0.923, 100 -> 0.953, 200 -> 0.963
HNSW_EF_CONSTRUCTION = 200
# (index size, efSearch), as for IVF_NPROBE. 1.02M: efSearch 512 gives 0.960 at p50 3.7 ms, but
# the graph took 1,543 s to build on one thread (13 times the IVF index).
HNSW_EF_SEARCH: tuple[tuple[int, int], ...] = ((20_888, 128), (121_055, 256), (321_055, 256), (1_021_055, 512))


def _measured(table: tuple[tuple[int, int], ...], n: int) -> int:
    """The knob measured at the smallest size >= n (the largest size's for bigger n)."""
    for size, value in table:
        if n <= size:
            return value
    return table[-1][1]


def _check_int(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")


def ivf_nlist(n_hint: int) -> int:
    """Inverted lists for about `n_hint` vectors: 4 * sqrt(n), at least 1."""
    return max(1, round(IVF_LISTS_PER_SQRT_N * math.sqrt(n_hint)))


def make_index(kind: str, dim: int, n_hint: int) -> faiss.Index:
    """An empty inner-product index of `kind` for about `n_hint` vectors, its search knob set.

    "flat" needs no training; "hnsw-sq8" trains its 8-bit ranges on any sample; "ivf-sq8" needs
    `train` on at least IVF_TRAIN_PER_LIST * nlist vectors (or all of them) before `add`.
    """
    _check_int("dim", dim, 1)
    _check_int("n_hint", n_hint, 0)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw-sq8":
        # the factory's Python wrapper is already the concrete class (as is the IVF one below)
        hnsw = cast(faiss.IndexHNSWSQ, faiss.index_factory(dim, f"HNSW{HNSW_M},SQ8", faiss.METRIC_INNER_PRODUCT))
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = _measured(HNSW_EF_SEARCH, n_hint)
        return hnsw
    if kind == "ivf-sq8":
        nlist = ivf_nlist(n_hint)
        # it owns its coarse quantizer (one passed to a constructor would need a kept reference)
        factory = f"IVF{nlist},SQ8"
        ivf = cast(faiss.IndexIVFScalarQuantizer, faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        ivf.nprobe = min(nlist, _measured(IVF_NPROBE, n_hint))
        return ivf
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def choose_kind(n: int) -> str:
    """The index kind for `n` vectors: exact up to EXACT_UP_TO, IVF over SQ8 codes beyond.

    Both approximate kinds met the goals at 321k and 1.02M vectors; IVF is the one chosen because
    the bullet index is rebuilt from all vectors at every build and IVF builds 13 times faster
    (114 s against 1,543 s at 1.02M, one thread) in 61% of the memory (398 against 656 bytes).
    """
    _check_int("n", n, 0)
    return "flat" if n <= EXACT_UP_TO else "ivf-sq8"
