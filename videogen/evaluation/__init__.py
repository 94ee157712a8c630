"""Generated-video metrics: ``videogen evaluate`` and the :class:`~videogen.callbacks.evaluation.VideoEvaluation`
validation callback share them (see docs/evaluate.md for every formula and the weights each needs).

* ``frechet.py``: Gaussian statistics of feature sets and the Frechet distance between them (FVD, VAE-FD);
* ``i3d.py``: the Kinetics-400 Inception-I3D network (a pure ``nn.Module``, loaded from a local file);
* ``features.py``: feature extractors (I3D, the stage-1 VAE's encoder, CLIP) and the reference-feature cache;
* ``dims.py``: per-video VBench-style dimensions computed from pixels (flicker, smoothness, dynamics,
  consistency of frame features);
* ``synthetic_world.py``: the synthetic set's attributes and their values;
* ``judge.py``: the synthetic set's pixel judge (``judge_clip``), applied to generated videos;
* ``videos.py``: reading the videos to evaluate (an mp4 folder, a shard set) into one shape;
* ``suite.py``: which metrics run, on what, producing one flat dict;
* ``report.py``: the report folder (metrics.json, grid PNG, mp4s, plots over training steps);
* ``generation.py``: videos from a DiT export or checkpoint, a fixed seed per prompt;
* ``runner.py``: ``videogen evaluate`` end to end (a folder of mp4s, an export, a run folder);
* ``reconstruction.py``: how well a VAE reconstructs a shard set (``videogen eval-vae``).
"""
