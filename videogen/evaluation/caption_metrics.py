"""Caption metrics: corpus BLEU-4 and the synthetic set's attribute accuracy.

BLEU-4 (Papineni et al., 2002): the geometric mean of clipped 1- to 4-gram precisions over the
corpus times the brevity penalty, on lower-cased word tokens, one reference per caption.

Attribute accuracy: a caption names an attribute right when it names the true value (a whole word)
and no other value of that attribute (``json.attributes`` of a synthetic clip is the truth).
"""

from __future__ import annotations

import math
import re
from collections import Counter

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def bleu4(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 in [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    matched, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = words(hyp), words(ref)
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hn = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rn = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matched[n - 1] += sum(min(c, rn[g]) for g, c in hn.items())
            total[n - 1] += max(0, len(h) - n + 1)
    if hyp_len == 0 or min(matched) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / 4
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_p)


def synthetic_vocabulary() -> dict[str, tuple[str, ...]]:
    """The values each judged attribute of the synthetic set takes (videogen.evaluation.synthetic_world)."""
    from videogen.evaluation.synthetic_world import COLOURS, DIRECTIONS, SHAPES

    return {"colour": tuple(COLOURS), "shape": tuple(SHAPES), "direction": tuple(DIRECTIONS)}


def named(caption: str, values: tuple[str, ...]) -> set[str]:
    """Which of ``values`` the caption names (whole words)."""
    found = set(words(caption))
    return {v for v in values if v in found}


def attribute_hits(caption: str, attributes: dict[str, str],
                   vocabulary: dict[str, tuple[str, ...]] | None = None) -> dict[str, bool]:
    """Per attribute present in ``attributes`` (and the vocabulary): does the caption name exactly it?"""
    vocabulary = vocabulary or synthetic_vocabulary()
    return {name: named(caption, values) == {attributes[name]}
            for name, values in vocabulary.items() if attributes.get(name) in values}
