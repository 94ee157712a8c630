"""Curation: from raw footage to training-grade shards (``videogen curate``, docs/curation.md).

Steps, in order: ``scene-split`` (cut at hard cuts, drop fragments), ``quality`` (resolution,
bitrate, blur, brightness, black and frozen frames, letterbox bars cropped), ``motion`` (static and
jittery clips), ``dedup`` (near-duplicates across the whole set, the best one kept), then optional
model scorers and a filter expression. One module per concept:

* ``frames.py``   decoding at the analysis size, re-encoding pieces
* ``scene.py``, ``quality.py``, ``motion.py``, ``dedup.py``, ``scorers.py``   the scores
* ``score.py``    pass 1: one shard scored (parallel, resumable)
* ``decide.py``   pass 2: thresholds, duplicates, filter, over the whole set
* ``run.py``      the driver: plan, passes, output shards + dataset.json, report
* ``report.py``   curation.json and the histograms
* ``testset.py``  a labelled synthetic set with every kind of clip the steps must find
"""

from data_recipes.curate.options import STEPS, CurateOptions
from data_recipes.curate.run import CurateError, curate

__all__ = ["STEPS", "CurateError", "CurateOptions", "curate"]
