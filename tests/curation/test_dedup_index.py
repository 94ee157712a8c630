"""The near-duplicate search at scale: the LSH index finds what all pairs find on planted signatures,
its parts add up to the whole, and a dedup array (parts, then the merge) decides what one run does."""

import numpy as np
import pytest

from curation_fixtures import labelled  # noqa: F401  (fixture)
from data_recipes.curate import CurateError, CurateOptions, curate, dedup, lsh


def planted(n, dups, seed=0, max_flip=40):
    """``n`` random signatures, ``dups`` of them copies of earlier ones with 0..max_flip pHash bits
    flipped and the colour layout nudged by <= 2 levels."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    cols = rng.integers(0, 256, (n, 48), dtype=np.uint8)
    for k in range(dups):
        i, j = int(rng.integers(0, n - dups)), n - dups + k
        bits = np.unpackbits(rows[i])
        bits[rng.choice(256, int(rng.integers(0, max_flip + 1)), replace=False)] ^= 1
        rows[j] = np.packbits(bits)
        cols[j] = np.clip(cols[i].astype(int) + rng.integers(-2, 3, 48), 0, 255)
    return [r.tobytes().hex() for r in rows], [c.tobytes().hex() for c in cols]


def as_set(pairs):
    return {(int(i), int(j), int(d)) for i, j, d in pairs}


def test_the_index_finds_what_all_pairs_find_and_its_parts_add_up():
    hashes, colours = planted(3000, 300)
    exact = dedup.linked_pairs(hashes, 40, colours, 6.0)  # 3000 <= EXACT_MAX: every pair
    assert len(exact) >= 300  # every planted copy (and no chance pair of random 256-bit hashes)
    indexed = dedup.linked_pairs(hashes, 40, colours, 6.0, exact_max=0)
    the_plan = lsh.plan(3000, 40)
    assert the_plan.bits == 13 and the_plan.tables > 20
    missed = as_set(exact) - as_set(indexed)
    assert as_set(indexed) <= as_set(exact) and len(missed) <= 0.01 * len(exact)
    parts = [dedup.linked_pairs(hashes, 40, colours, 6.0, part=p, parts=3, exact_max=0) for p in range(3)]
    assert set().union(*map(as_set, parts)) == as_set(indexed)
    exact_parts = [dedup.linked_pairs(hashes, 40, colours, 6.0, part=p, parts=4) for p in range(4)]
    assert set().union(*map(as_set, exact_parts)) == as_set(exact)
    # the colour layout has to agree too: the copies' colours moved by ~10 levels link no more
    far = colours[:2700] + [np.minimum(np.frombuffer(bytes.fromhex(c), np.uint8).astype(int) + 12, 255)
                            .astype(np.uint8).tobytes().hex() for c in colours[2700:]]
    assert len(dedup.linked_pairs(hashes, 40, far, 6.0)) == len(exact) - 300


def test_identical_signatures_cost_one_row():
    hashes, colours = planted(50, 0)
    pairs = dedup.linked_pairs(hashes + [hashes[3]] * 400, 40, colours + [colours[3]] * 400, 6.0, exact_max=0)
    assert len(pairs) == 400 and set(pairs[:, 0].tolist()) == {3} and not pairs[:, 2].any()
    assert dedup.groups(450, pairs) == [[3] + list(range(50, 450))]


@pytest.mark.slow
def test_a_dedup_array_then_the_merge_decides_as_one_run(labelled, tmp_path):
    src, _ = labelled
    opts = CurateOptions()
    ref = curate(str(src), tmp_path / "ref", opts, progress=False, histograms=False)
    out = tmp_path / "array"
    with pytest.raises(CurateError, match="not scored yet"):
        curate(str(src), out, opts, dedup_part=0, num_dedup_parts=2, progress=False)
    for group in range(2):
        curate(str(src), out, opts, shard_index=group, num_shard_groups=2, progress=False)
    done = [curate(str(src), out, opts, dedup_part=p, num_dedup_parts=2, progress=False) for p in range(2)]
    assert [d["dedup_part_done"] for d in done] == [0, 1]
    assert sum(d["pairs"] for d in done) >= ref["steps"]["dedup"]["dropped"]["duplicate"] > 0
    assert sorted(p.name for p in (out / ".curate" / "dedup").iterdir()) == \
        ["part-0000-of-0002.npz", "part-0001-of-0002.npz"]
    merged = curate(str(src), out, opts, progress=False, histograms=False)
    assert merged["timing"]["dedup_parts_read"] == 2 and merged["timing"]["shards_scored_now"] == 0
    assert merged["samples"] == ref["samples"] and merged["steps"] == ref["steps"]
    # other dedup options than the parts were searched with: the merge searches itself, same answer as one run
    looser = CurateOptions(dedup_max_distance=20)
    again = curate(str(src), out, looser, progress=False, histograms=False)
    assert again["timing"]["dedup_parts_read"] == 0
    assert again["samples"] == curate(str(src), tmp_path / "ref20", looser, progress=False,
                                      histograms=False)["samples"]
    with pytest.raises(CurateError, match="give both --dedup-part and --num-dedup-parts"):
        curate(str(src), out, opts, dedup_part=0)
