"""Pass 2 of a curation run: judge every scored piece, over the whole set at once.

Rules run in step order; a piece failing a rule gets the flag (``json["curation"][flag] = true``)
and the reason ``step:flag``. The first failing step drops it; later steps still flag it but do
not count it as theirs. Duplicates are looked for among the pieces still kept, across every shard;
each group keeps its best piece. Then the filter expression, over the final scores and flags.
With ``keep_all`` nothing is dropped, and the flags say what would have been.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from data_recipes.curate import dedup
from data_recipes.curate.options import CurateOptions
from videogen.data.score_filter import MissingScore, ScoreFilter, known_names, sample_values, value_type

# flag -> (step, test on the scores); a rule whose scores are absent (an image, a step not run) does not apply
RULES: list[tuple[str, str, Any]] = [
    ("quality", "low_resolution", lambda s, o: s["min_side"] < o.min_side),
    ("quality", "low_bitrate", lambda s, o: 0 < s["bitrate_kbps"] < o.min_bitrate_kbps),
    ("quality", "blurry", lambda s, o: s["sharpness"] < o.min_sharpness),
    ("quality", "dark", lambda s, o: s["brightness"] < o.min_brightness),
    ("quality", "bright", lambda s, o: s["brightness"] > o.max_brightness),
    ("quality", "black", lambda s, o: s["black_fraction"] > o.max_black_fraction),
    ("quality", "frozen", lambda s, o: not s["still"] and s["frozen_fraction"] > o.max_frozen_fraction),
    ("motion", "static", lambda s, o: s["motion"] < o.static_motion),
    ("motion", "jittery", lambda s, o: s["jitter"] > o.max_jitter),
]


def flag(scores: dict, opts: CurateOptions) -> list[str]:
    """``step:flag`` for every rule the scores fail (sets the flags in ``scores``)."""
    reasons = []
    for step, name, test in RULES:
        if step not in opts.steps:
            continue
        try:
            failed = bool(test(scores, opts))
        except KeyError:  # not scored (an image has no motion)
            continue
        scores[name] = failed
        if failed:
            reasons.append(f"{step}:{name}")
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
        expr = ScoreFilter(opts.filter, known_names(types))
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
