"""The score filter language: parsing, evaluation, errors that point at the column, the select stage."""

import pytest

from videogen.data import stages
from videogen.data.score_filter import FilterError, ScoreFilter, known_names, sample_values
from videogen.data.stages import select

KNOWN = known_names({"motion": "number", "jitter": "number", "duplicate": "bool", "static": "bool"})


@pytest.mark.parametrize("expr, values, expected", [
    ("motion > 0.02 and duration >= 2 and not duplicate", {"motion": 0.03, "duration": 2, "duplicate": False}, True),
    ("motion > 0.02 and duration >= 2 and not duplicate", {"motion": 0.03, "duration": 2, "duplicate": True}, False),
    ("motion > 0.02 and duration >= 2 and not duplicate", {"motion": 0.01, "duration": 3, "duplicate": False}, False),
    ("static or motion > 1 and duplicate", {"static": True, "motion": 0, "duplicate": False}, True),  # and first
    ("(static or motion > 1) and duplicate", {"static": True, "motion": 0, "duplicate": False}, False),
    ("not not static", {"static": True}, True),
    ("0.1 <= motion < 0.5", {"motion": 0.1}, True),
    ("0.1 <= motion < 0.5", {"motion": 0.5}, False),
    ("-motion == -2 and jitter != 1e-3", {"motion": 2, "jitter": 0.002}, True),
    ("duplicate == false and .5 > jitter", {"duplicate": False, "jitter": 0.4}, True),
    ("WIDTH >= 64 AND True", {"WIDTH": 1}, None),  # names are case-sensitive: WIDTH is unknown
])
def test_evaluates_like_python_precedence(expr, values, expected):
    if expected is None:
        with pytest.raises(FilterError, match="unknown name 'WIDTH'"):
            ScoreFilter(expr, KNOWN)
        return
    assert ScoreFilter(expr, KNOWN)(values) is expected


@pytest.mark.parametrize("expr, column, message", [
    ("motion > > 2", 10, "expected a number, a name, true, false or '\\(' but found '>'"),
    ("motoin > 1", 1, "unknown name 'motoin'; the names here are .*motion"),
    ("motion > 1 duplicate", 12, "unexpected 'duplicate'"),
    ("(motion > 1", 12, "missing '\\)'"),
    ("motion # 2", 8, "unexpected character '#'"),
    ("", 1, "empty expression"),
    ("motion >", 9, "expected a number.* but found the end"),
    ("not motion", 1, "'not' takes a condition; this is a number"),
    ("motion and static", 1, "'and' joins conditions; this is a number"),
    ("duplicate > 1", 11, "'>' compares numbers, not true/false"),
    ("motion == static", 8, "'==' compares a number with a bool"),
    ("motion", 1, "the expression is a number, not a condition"),
])
def test_errors_name_the_column(expr, column, message):
    with pytest.raises(FilterError, match=f"column {column}: {message}") as e:
        ScoreFilter(expr, KNOWN)
    caret_line = str(e.value).splitlines()[-1]
    assert caret_line.index("^") == column - 1 + 2  # under the offending character (lines are indented by 2)


def test_no_eval_reaches_python():
    for expr in ("__import__('os')", "motion.__class__", "[1]", "motion; 1"):
        with pytest.raises(FilterError):
            ScoreFilter(expr)


def test_sample_values_take_json_fields_and_curation_scores():
    meta = {"width": 96, "height": 64, "fps": 12, "num_frames": 24, "duration": 2.0, "source": "x",
            "curation": {"motion": 0.1, "duplicate": False, "phash": "ab", "letterbox": None, "scene": {"index": 0}}}
    assert sample_values(meta) == {"width": 96, "height": 64, "fps": 12, "num_frames": 24, "duration": 2.0,
                                   "motion": 0.1, "duplicate": False}


def test_select_stage_counts_what_it_drops():
    records = [stages.Record(k, "shard-0.tar", "mp4", b"x", "c", meta, 64, 64, 9, 12.0) for k, meta in [
        ("a", {"curation": {"motion": 0.5, "duplicate": False}}),
        ("b", {"curation": {"motion": 0.0, "duplicate": False}}),
        ("c", {"curation": {"motion": 0.5, "duplicate": True}}),
        ("d", {}),  # never curated
    ]]
    skips = stages.Skips(keep=True)
    kept = list(select(records, "motion > 0.1 and not duplicate", skips))
    assert [r.key for r in kept] == ["a"]
    assert skips.counts == {"filtered_out": 2, "filter_missing_score": 1}
    missing = next(s for s in skips.records if s["reason"] == "filter_missing_score")
    assert missing["key"] == "d" and "no 'motion' score" in missing["detail"]
    assert list(select(records, None, skips)) == records


def test_the_filter_is_parsed_once_into_typed_nodes_and_checked_without_reparsing():
    from videogen.data import score_filter as sf

    f = ScoreFilter("motion > 0.1 and not duplicate")
    assert f.tree == sf.And((sf.Compare((sf.Name("motion", 0), sf.Num(0.1)), ((">", 7),), 0),
                             sf.Not(sf.Name("duplicate", 21), 17)))
    checked = f.checked(KNOWN)
    assert checked.tree is f.tree and checked({"motion": 0.2, "duplicate": False}) is True
    with pytest.raises(FilterError, match="unknown name 'motion'"):
        f.checked(known_names())


def test_the_filter_language_is_pure():
    """score_filter imports no I/O module (import cycles anywhere in videogen: tests/test_layout.py)."""
    import ast
    from pathlib import Path

    import videogen.data

    folder = Path(videogen.data.__file__).parent

    def imports(path):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                yield node.module or ""

    assert set(imports(folder / "score_filter.py")) <= {"__future__", "math", "re", "dataclasses", "typing"}
