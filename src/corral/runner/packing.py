"""Which sequence ids a decode holds, and keeping them in one run.

With one KV stream per sequence (corral's and llama-server's default) llama.cpp puts only a run of
consecutive sequence ids in one ubatch (llama_batch_allocr::split_equal, sequential), and each
extra ubatch is another pass over the weights. Three things keep a step at one pass: a new
request takes a free slot next to the busy ones (SlotPool.take), a small hole is filled with a
throwaway token (holes), and where busy slots lie scattered (the last requests of a burst, a
slot freed next to the run's end) requests are moved into one run (packing, SlotPool.move).
"""

from __future__ import annotations

from collections.abc import Sequence

# One sequence id missing from a decode's run of them is filled with a throwaway token (removed
# from the KV after the decode). SmolLM2 Q4_1 on 2 CPU cores (benchmarks/holes.py): 3 + 4 tokens
# around a hole 33.8-36.7 ms, filled to one run of 8 27.7-31.1 ms. Only with FILL_MIN_SIDE ids on
# each side, and one hole: cutting off a single token cost about what filling did, and several
# holes took more tokens than the splits cost (docs/PERFORMANCE.md "Holes in the run of sequence
# ids"); what filling leaves is packed.
FILL_MIN_SIDE = 2
FILL_TOKEN = 0  # any id of the vocabulary: its K/V are removed and its logits never read


def holes(seqs: Sequence[int]) -> list[int]:
    """The sequence id to fill: the only one missing between the first and the last of `seqs`
    (increasing), with at least FILL_MIN_SIDE of them on each side; else none."""
    if len(seqs) < 2 * FILL_MIN_SIDE or seqs[-1] - seqs[0] != len(seqs):
        return []
    for before, (a, b) in enumerate(zip(seqs, seqs[1:]), start=1):
        if b == a + 2:
            return [a + 1] if min(before, len(seqs) - before) >= FILL_MIN_SIDE else []
        if b != a + 1:
            return []
    return []


def runs(seqs: Sequence[int]) -> int:
    """Passes over the weights for one token of each of these sequence ids (increasing): one per
    run of consecutive ids once the hole is filled."""
    ids = sorted([*seqs, *holes(seqs)])
    return sum(1 for i, s in enumerate(ids) if i == 0 or s != ids[i - 1] + 1)


def packing(busy: Sequence[int], n_slots: int) -> list[tuple[int, int]]:
    """Moves (from, to) that put the busy sequence ids in one run, fewest first: the window of
    len(busy) ids that holds most of them (the lowest of equals), each busy id outside it to a
    free id inside it. None when they decode in one pass already."""
    seqs = sorted(busy)
    if runs(seqs) <= 1:
        return []
    k, taken = len(seqs), set(seqs)
    start = max(range(n_slots - k + 1), key=lambda a: (sum(s in taken for s in range(a, a + k)), -a))
    window = range(start, start + k)
    return list(zip([s for s in seqs if s not in window], [s for s in window if s not in taken], strict=True))
