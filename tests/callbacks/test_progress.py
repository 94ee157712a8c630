"""Progress: the pace and time left on known timings (a fake clock through a real Trainer run), the
time-cap warning, and the warning when a run stops short of its step budget."""

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from videogen.callbacks.progress import Pace, Progress, format_duration, format_pace, measure_pace, steps_before_cap

SECONDS_PER_STEP = 0.5  # the fake clock: 120 steps/min


def fit(callback, max_steps, max_epochs=None, batches=64):
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=max_epochs, limit_train_batches=batches,
                      limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[callback])
    callback.clock = lambda: trainer.global_step * SECONDS_PER_STEP
    callback.wall = lambda: 0.0  # 00:00 UTC on 1970-01-01
    trainer.fit(BoringModel())
    return trainer


def test_pace_and_time_left_through_a_real_fit(capsys):
    cb = Progress(every_n_steps=4, name="tiny")
    trainer = fit(cb, max_steps=10)
    assert trainer.global_step == 10
    assert cb.last == Pace(step=8, max_steps=10, steps_per_min=pytest.approx(120.0), seconds_left=pytest.approx(1.0))
    out = capsys.readouterr().out
    assert "[progress] tiny: training 10 steps; the pace and time left every 4 steps" in out
    assert "[progress] tiny: step 4/10 (40.0%), 120.0 steps/min, 0:03 left (done at 00:00 UTC)" in out
    assert "[progress] tiny: step 8/10 (80.0%), 120.0 steps/min, 0:01 left (done at 00:00 UTC)" in out
    assert "[progress] tiny: trained to step 10/10 in 0:05 (120.0 steps/min)" in out
    assert "WARNING" not in out and len(cb.lines) == 4


def test_a_run_that_stops_before_its_budget_says_so(capsys):
    cb = Progress(every_n_steps=100)
    fit(cb, max_steps=10, max_epochs=1, batches=6)  # one epoch of 6 batches ends it at step 6
    out = capsys.readouterr().out
    assert "[progress] BoringModel: trained to step 6/10 in 0:03" in out
    assert "WARNING BoringModel: stopped at step 6 of its budget of 10;" in out


def test_pace_after_a_resume_counts_only_this_runs_steps():
    # resumed at step 1000, 300 steps in 150 s: 120 steps/min, 1700 steps left = 850 s
    p = measure_pace(1300, 3000, start_step=1000, elapsed=150.0)
    assert p.steps_per_min == pytest.approx(120.0) and p.seconds_left == pytest.approx(850.0)
    assert measure_pace(1000, 3000, 1000, 0.0).steps_per_min is None  # no step timed yet
    assert measure_pace(50, None, 0, 30.0).seconds_left is None  # no step budget: no time left
    assert measure_pace(3100, 3000, 0, 60.0).seconds_left == 0.0


def test_the_time_cap_warning_names_the_step_it_stops_at():
    p = measure_pace(600, 3000, 0, 300.0)  # 120 steps/min: 1200 s left
    assert steps_before_cap(p, 600.0) == 1800  # 10 more minutes = 1200 more steps
    assert steps_before_cap(p, 1200.0) is None  # the budget ends first
    line = format_pace("dit", p, now=3600.0, cap_step=1800)
    assert line.startswith("[progress] dit: step 600/3000 (20.0%), 120.0 steps/min, 20:00 left (done at 01:20 UTC); "
                           "at this pace trainer.max_time stops it at about step 1800")


def test_durations_and_bad_arguments():
    assert [format_duration(s) for s in (0, 59.6, 706, 3723)] == ["0:00", "1:00", "11:46", "1:02:03"]
    with pytest.raises(ValueError, match="every_n_steps=0: must be at least 1"):
        Progress(every_n_steps=0)
