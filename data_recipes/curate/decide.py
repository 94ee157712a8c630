"""Pass 2 of a curation run: judge every scored piece, over the whole set at once.

Rules run in step order; a piece failing a rule gets the flag (``json["curation"][flag] = true``)
and the reason ``step:flag``. The first failing step drops it; later steps still flag it but do
not count it as theirs. Duplicates are looked for among the pieces still kept, across every shard;
each group keeps its best piece. Then the filter expression, over the final scores and flags.
With ``keep_all`` nothing is dropped, and the flags say what would have been.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from data_recipes.curate import dedup
from data_recipes.curate.options import CurateOptions
from videogen.data.score_filter import MissingScore, known_names, sample_values, value_type

@dataclass(frozen=True)
class Rule:
    """A clip fails when ``score`` is below (``below``) or above the option ``option``'s value;
    ``only_if`` names a bool score that must be false for the rule to apply (``still`` for frozen)."""

    step: str
    flag: str
    score: str
    below: bool
    option: str
    only_if_not: str | None = None
    above_zero: bool = False  # the score must be > 0 to fail (a bitrate of 0 is unknown, not low)

    def threshold(self, opts: CurateOptions) -> float:
        return getattr(opts, self.option)

    def fails(self, scores: dict, opts: CurateOptions) -> bool:
        """(KeyError when the score is absent: an image has no motion.)"""
        value, t = scores[self.score], self.threshold(opts)
        if self.only_if_not and scores[self.only_if_not]:
            return False
        if self.above_zero and not value > 0:
            return False
        return value < t if self.below else value > t


# in step order; a rule whose score is absent (an image, a step not run) does not apply
RULES: list[Rule] = [
    Rule("quality", "low_resolution", "min_side", True, "min_side"),
    Rule("quality", "low_bitrate", "bitrate_kbps", True, "min_bitrate_kbps", above_zero=True),
    Rule("quality", "blurry", "sharpness", True, "min_sharpness"),
    Rule("quality", "dark", "brightness", True, "min_brightness"),
    Rule("quality", "bright", "brightness", False, "max_brightness"),
    Rule("quality", "black", "black_fraction", False, "max_black_fraction"),
    Rule("quality", "frozen", "frozen_fraction", False, "max_frozen_fraction", only_if_not="still"),
    Rule("motion", "static", "motion", True, "static_motion"),
    Rule("motion", "jittery", "jitter", False, "max_jitter"),
]


def flag(scores: dict, opts: CurateOptions) -> list[str]:
    """``step:flag`` for every rule the scores fail (sets the flags in ``scores``)."""
    reasons = []
    for rule in RULES:
        if rule.step not in opts.steps:
            continue
        try:
            failed = bool(rule.fails(scores, opts))
        except KeyError:  # not scored (an image has no motion)
            continue
        scores[rule.flag] = failed
        if failed:
            reasons.append(f"{rule.step}:{rule.flag}")
    return reasons


def rank(entry: dict) -> tuple:
    """Sort key of a duplicate group: larger first, then higher bitrate, sharper, then the earlier one."""
    s, (w, h, n, _fps) = entry["scores"], entry["shape"]
    return (-w * h, -n, -s.get("bitrate_kbps", 0.0), -s.get("sharpness", 0.0), entry["order"])


def _all_pairs(hashes: list[str], colours: list[str], opts: CurateOptions):
    return dedup.linked_pairs(hashes, opts.dedup_max_distance, colours, opts.dedup_max_colour)


def decide(entries: list[dict], opts: CurateOptions, dedup_pairs: Callable | None = None) -> dict[str, Any]:
    """Judge ``entries`` (every piece of every shard, in order) in place: each gets ``kept`` and
    ``reasons``; returns the per-step counts and the filter's known score names.

    ``dedup_pairs(hashes, colours, opts)`` gives the linked pairs among the pieces that reach the
    dedup step (default: :func:`dedup.linked_pairs` over all of them; ``run.py`` passes one that
    reads an array's parts, or that computes and saves one part)."""
    for i, e in enumerate(entries):
        e["order"] = i
        e.setdefault("reasons", [])
        if e["scored"]:
            e["reasons"] += flag(e["scores"], opts)
    steps: dict[str, dict[str, Any]] = {}
    if "scene-split" in opts.steps:
        split_sources = {e["source"] for e in entries if (e.get("scores") or {}).get("num_scenes", 1) > 1}
        steps["scene-split"] = {"clips_split": len(split_sources),
                                "pieces": sum(1 for e in entries if e["scored"] and "scene" in e["scores"]),
                                "dropped": dict(Counter(r.split(":")[1] for e in entries for r in e["reasons"]
                                                        if r.startswith("scene-split:")))}
    alive = [e for e in entries if e["scored"]]  # (fragments were dropped by the scene split)
    for step in ("quality", "motion"):
        if step not in opts.steps:
            continue
        first = Counter()
        for e in alive:
            own = [r.split(":")[1] for r in e["reasons"] if r.startswith(step + ":")]
            if own:
                first[own[0]] += 1
        steps[step] = {"in": len(alive), "dropped": dict(first)}
        alive = [e for e in alive if not any(r.startswith(step + ":") for r in e["reasons"])]
        steps[step]["kept"] = len(alive)
    if "dedup" in opts.steps:
        hashes = [e["scores"]["phash"] for e in alive]
        colours = [e["scores"]["colour_layout"] for e in alive]
        pairs = (dedup_pairs or _all_pairs)(hashes, colours, opts)
        groups = dedup.groups(len(alive), pairs)
        for e in entries:
            if e["scored"]:
                e["scores"].update(duplicate=False, duplicate_of=None)
        dropped = 0
        for group in groups:
            best = min(group, key=lambda k: rank(alive[k]))
            for k in group:
                if k == best:
                    continue
                e = alive[k]
                e["scores"].update(duplicate=True, duplicate_of=alive[best]["key"],
                                   duplicate_distance=dedup.distance(hashes[k], hashes[best]))
                e["reasons"].append("dedup:duplicate")
                dropped += 1
        steps["dedup"] = {"in": len(alive), "groups": len(groups), "dropped": {"duplicate": dropped} if dropped else {},
                          "kept": len(alive) - dropped}
        alive = [e for e in alive if not e["reasons"]]
    types = score_types(entries)
    if opts.filter:
        expr = opts.score_filter.checked(known_names(types))  # parsed once (CurateOptions), checked here
        failed, missing = 0, 0
        for e in alive:
            try:
                ok = expr(sample_values({**dict(zip(("width", "height", "num_frames", "fps"), e["shape"])),
                                         "duration": e["shape"][2] / e["shape"][3] if e["shape"][3] else 0.0,
                                         "curation": e["scores"]}))
            except MissingScore:
                e["reasons"].append("filter:missing_score")
                missing += 1
                continue
            if not ok:
                e["reasons"].append("filter:false")
                failed += 1
        steps["filter"] = {"in": len(alive), "expression": opts.filter,
                           "dropped": {k: v for k, v in (("false", failed), ("missing_score", missing)) if v},
                           "kept": len(alive) - failed - missing}
    for e in entries:
        e["kept"] = opts.keep_all and e["scored"] or not e["reasons"]
        if e["scored"]:
            e["scores"]["dropped_by"] = e["reasons"][0] if e["reasons"] else None
    return {"steps": steps, "score_types": types}


def score_types(entries: list[dict]) -> dict[str, str]:
    """name -> "number" | "bool" of every filterable score the pieces carry."""
    types: dict[str, str] = {}
    for e in entries:
        for k, v in (e.get("scores") or {}).items():
            t = value_type(v)
            if t is not None:
                types.setdefault(k, t)
    return dict(sorted(types.items()))
