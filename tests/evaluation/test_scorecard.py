"""The scorecard's judgement on given numbers: pass/fail at the floors, a missing or non-finite figure is
a miss, one advice line per miss naming the stage's step budget (or its time cap when the clock cut
it short), recaptions scored against ground truth, and the command's input errors."""

import math
import re

import pytest

from videogen.cli import main
from videogen.evaluation.scorecard import (TARGETS, advice, attribute_accuracy, build_card, format_card,
                                           judge_figures, suggested_steps)

GOOD = {"vae_psnr": 30.2, "vae_ssim": 0.94, "vae_colour_kept": 1.0, "recaption_colour": 1.0, "recaption_shape": 0.967,
        "recaption_direction": 0.95, "t2v_colour": 0.983, "t2v_direction": 0.90}
STAGES = {"vae": {"steps": 3000, "max_steps": 3000, "config": "configs/vae/quickstart.yaml"},
          "captioner": {"steps": 3000, "max_steps": 3000, "config": "configs/captioner/quickstart.yaml"},
          "dit": {"steps": 2600, "max_steps": 2600, "config": "configs/dit/quickstart.yaml"}}


def test_the_targets_are_issue_15s():
    floors = {t.key: t.minimum for t in TARGETS}
    assert floors == {"vae_psnr": 30.0, "vae_ssim": None, "vae_colour_kept": None, "recaption_colour": 0.95,
                      "recaption_shape": 0.95, "recaption_direction": 0.95, "t2v_colour": 0.95, "t2v_direction": 0.90}


def test_figures_at_their_floors_pass():
    card = build_card(GOOD, STAGES)
    assert card["passed"] and card["misses"] == []
    assert [r["passed"] for r in card["figures"]] == [True, None, None, True, True, True, True, True]
    text = format_card(card)
    assert "every target met (6 of 6)" in text and "BELOW" not in text


@pytest.mark.parametrize("key,value", [("vae_psnr", 29.99), ("recaption_shape", 0.9499), ("t2v_direction", 0.8833),
                                       ("t2v_colour", None), ("recaption_colour", math.nan), ("vae_psnr", "30")])
def test_one_figure_below_its_floor_or_missing_fails_the_card(key, value):
    card = build_card({**GOOD, key: value}, STAGES)
    assert not card["passed"] and len(card["misses"]) == 1
    row = next(r for r in card["figures"] if r["key"] == key)
    assert row["passed"] is False and (row["value"] is None or row["value"] == value)


def test_figures_without_a_floor_never_fail():
    card = build_card({**GOOD, "vae_ssim": 0.1, "vae_colour_kept": None}, STAGES)
    assert card["passed"]


def test_advice_names_the_budget_to_raise_and_the_config():
    rows = judge_figures({**GOOD, "vae_psnr": 28.61, "t2v_direction": 0.1667})
    card = build_card({**GOOD, "vae_psnr": 28.61, "t2v_direction": 0.1667}, STAGES)
    assert card["misses"] == [
        "VAE PSNR 28.61 dB < 30.00 dB: train the VAE longer: --trainer.max_steps=4500 "
        "--model.init_args.lr_scheduler.init_args.decay=4500 (set both in configs/vae/quickstart.yaml; it trained 3000 "
        "steps), then rerun",
        "text-to-video direction 16.7% < 90.0%: train the DiT longer: --trainer.max_steps=3900 "
        "--model.init_args.lr_scheduler.init_args.decay=3900 (set both in configs/dit/quickstart.yaml; it trained 2600 "
        "steps), then rerun"]
    # without its config the flags go on the stage's fit
    dit = next(r for r in rows if r["key"] == "t2v_direction")
    assert advice(dit, {"steps": 2600}).endswith(
        "train the DiT longer: --trainer.max_steps=3900 --model.init_args.lr_scheduler.init_args.decay=3900 on its fit "
        "(it trained 2600 steps), then rerun")
    assert [suggested_steps(s) for s in (12, 2600, 3000, 1001)] == [100, 3900, 4500, 1600]


def test_a_stage_cut_short_by_its_clock_is_told_to_raise_max_time():
    stages = {**STAGES, "captioner": {**STAGES["captioner"], "steps": 655}}
    card = build_card({**GOOD, "recaption_shape": 0.333}, stages)
    assert card["misses"] == ["recaption shape 33.3% < 95.0%: the captioner trained only 655 of its 3000 steps "
                              "(trainer.max_time stopped it): raise trainer.max_time in "
                              "configs/captioner/quickstart.yaml (or give the run the machine to itself) and rerun"]


def test_a_dit_miss_after_a_recaption_miss_points_at_the_captioner():
    card = build_card({**GOOD, "recaption_direction": 0.5, "t2v_direction": 0.3}, STAGES)
    assert len(card["misses"]) == 2 and card["misses"][0].startswith("recaption direction 50.0% < 95.0%: train the "
                                                                      "captioner longer")
    assert card["misses"][1] == ("text-to-video direction 30.0% < 90.0%: the DiT trains on the recaptions, which "
                                 "missed their targets too: fix the captioner first (see its line), then rerun")
    text = format_card(card)
    assert "below target: 2 of 6; what to do:" in text and text.count("BELOW TARGET") == 2
    assert "\n  recaption direction          50.0%  >= 95.0%    BELOW TARGET\n" in text


def test_recaptions_are_scored_against_ground_truth():
    truth = {"colour": "red", "shape": "circle", "direction": "left"}
    rows = [(truth, "A red circle moves to the left."),  # all right
            (truth, "A red square moves to the left."),  # shape wrong
            (truth, "A red circle moves left, then a blue one."),  # names two colours: colour wrong
            ({"colour": "red", "shape": "circle", "direction": "none"}, "A red circle rests.")]  # no direction word
    acc = attribute_accuracy(rows)
    assert acc["colour"] == {"correct": 3, "n": 4, "accuracy": 0.75}
    assert acc["shape"] == {"correct": 3, "n": 4, "accuracy": 0.75}
    assert acc["direction"]["n"] == 3 and acc["direction"]["correct"] == 3  # 'none' is not in the vocabulary
    assert attribute_accuracy([])["colour"] == {"correct": 0, "n": 0, "accuracy": None}


@pytest.mark.parametrize("argv,message", [
    (["--num-prompts", "0"], "--num-prompts 0: must be at least 1"),
    (["--cfg", "0"], "--cfg 0.0: must be a positive guidance scale"),
    (["--shape", "9", "0", "96"], "--shape 9 0 96: frames, height and width must be positive"),
    ([], "--data {tmp}/heldout: no such folder; make the held-out set first"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    rc = main(["scorecard", "--vae", str(tmp_path / "v"), "--captioner", str(tmp_path / "c"), "--dit",
               str(tmp_path / "d"), "--data", str(tmp_path / "heldout"), "--out", str(tmp_path / "card.json"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and message.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "card.json").exists()


def test_a_missing_export_is_named(tmp_path, capsys):
    from videogen.data.writer import TarShardWriter

    with TarShardWriter(tmp_path / "heldout" / "shard-000000.tar") as w:
        w.write({"__key__": "a", "txt": "x"})
    rc = main(["scorecard", "--vae", str(tmp_path / "v"), "--captioner", str(tmp_path / "c"), "--dit",
               str(tmp_path / "d"), "--data", str(tmp_path / "heldout"), "--out", str(tmp_path / "card.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"--vae {tmp_path / 'v'}: " in err and "no such export folder" in err, err


def test_a_stage_config_is_read_for_its_budget_and_a_bad_one_is_named(tmp_path):
    from videogen.commands.scorecard import MAX_CONFIG_BYTES, ScorecardError, read_stage_config

    good = tmp_path / "vae.yaml"
    good.write_text("trainer:\n  max_steps: 3000\n  max_time: '00:00:45:00'\nmodel: {}\n")
    assert read_stage_config(str(good), "--vae-config") == {"config": str(good), "max_steps": 3000,
                                                            "max_time": "00:00:45:00"}
    assert read_stage_config(None, "--vae-config") == {}
    cases = {"missing.yaml": None, "bad.yaml": "trainer: [unclosed\n", "list.yaml": "- a\n",
             "big.yaml": "#" * (MAX_CONFIG_BYTES + 1)}
    messages = {"missing.yaml": "no such file", "bad.yaml": "not YAML", "list.yaml": "no trainer section",
                "big.yaml": "not a fit config"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ScorecardError, match=f"^--dit-config {re.escape(str(tmp_path / name))}: .*{messages[name]}"):
            read_stage_config(str(tmp_path / name), "--dit-config")


def test_a_previous_card_is_reused_only_for_the_same_inputs(tmp_path):
    import json

    from videogen.commands.scorecard import previous_card

    inputs = {"weights_sha256": {"vae": "a", "captioner": "b", "dit": "c"}, "data": "d",
              "settings": {"steps": 30, "cfg": 4.0, "shape": [9, 64, 96]}}
    card = build_card(GOOD, STAGES, inputs=inputs)
    out = tmp_path / "card.json"
    out.write_text(json.dumps(card))
    assert previous_card(out, json.loads(json.dumps(inputs)))["figures"] == card["figures"]
    assert previous_card(out, {**inputs, "data": "other"}) is None  # another held-out set: measured anew
    for text in ("{not json", "[1, 2]", json.dumps({**card, "figures": [1, 2]}), "\xff"):
        out.write_text(text, errors="surrogateescape") if text != "\xff" else out.write_bytes(b"\xff\xfe")
        assert previous_card(out, inputs) is None
    assert previous_card(tmp_path / "none.json", inputs) is None


def test_a_shape_the_models_cannot_sample_is_refused_with_the_grids_reason():
    from types import SimpleNamespace

    from videogen.commands.scorecard import ScorecardError, check_shape

    generator = SimpleNamespace(stats={"temporal_compression": 2, "spatial_compression": 4},
                                dit=SimpleNamespace(patch_size=(1, 2, 2)))
    check_shape(generator, (9, 32, 48))
    with pytest.raises(ScorecardError, match=re.escape(
            "--shape 4 32 48: this DiT and VAE sample 1 + k*2 frames (latent frames a multiple of 1) at heights that "
            "are multiples of 8 and widths of 8, e.g. --shape 9 64 96 (num_frames=4 is not 1 + k*2 (use 3 or 5))")):
        check_shape(generator, (4, 32, 48))
    with pytest.raises(ScorecardError, match=re.escape("(width=44 is not a multiple of 8 (use 40 or 48))")):
        check_shape(generator, (9, 32, 44))
