"""Inference pipelines: trained stages put together to make something (diffusers' pipelines, beside
its models and schedulers; here ``videogen/models`` and ``videogen/diffusion``).

* :mod:`videogen.pipelines.video` -- text (and given frames) -> video with a trained DiT and its VAE:
  validation samples, ``videogen sample``, the evaluations.
* :mod:`videogen.pipelines.captioning` -- a trained captioner: captioning clips (``videogen recaption``)
  and upsampling short prompts (``videogen sample --upsampler``).
* :mod:`videogen.pipelines.recaption` -- ``videogen recaption``: a corpus-wide predict job, the same
  shape as ``videogen encode`` (a predict module, a shard-writer callback).

Nothing is imported here: each module is imported where it is used.
"""
