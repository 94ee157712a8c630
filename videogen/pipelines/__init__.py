"""Inference pipelines: trained stages put together to make something (diffusers' pipelines, beside
its models and schedulers; here ``videogen/models`` and ``videogen/diffusion``).

* :mod:`videogen.pipelines.video` -- text (and given frames) -> video with a trained DiT and its VAE:
  validation samples, ``videogen sample``, the evaluations.
* :mod:`videogen.pipelines.captioning` -- a trained captioner: captioning clips (``videogen recaption``)
  and upsampling short prompts (``videogen sample --upsampler``).
* :mod:`videogen.pipelines.encode` and :mod:`videogen.pipelines.recaption` -- ``videogen encode`` (the
  latent cache) and ``videogen recaption``: corpus-wide predict jobs of one shape, a stream of whole
  shards -> a predict module (:mod:`~videogen.pipelines.encode_module`,
  :mod:`~videogen.pipelines.recaption_module`) -> a shard-writer callback (:mod:`~videogen.pipelines.shard_writer`).
  They live here, not beside the training stages in ``videogen/modules``: they train nothing.

Nothing is imported here: each module is imported where it is used.
"""
