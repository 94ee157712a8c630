"""``videogen encode``: the latent cache, as a corpus-wide predict job.

A predict run through the Trainer (devices, precision, DDP and SLURM as for training): each clip
is taken at its native aspect and duration, scaled to at most ``--max-area`` pixels with sides that
are multiples of ``--size-multiple`` and ``1 + k * tc`` frames (at most ``--max-frames``), encoded to
the VAE's posterior mean and written as ``latent.npy`` (float16, ``(C, t, h, w)``) with the sample's
``txt`` and ``json``. One output shard per input shard; finished shards are kept by a rerun. The
output's ``dataset.json`` records the VAE's identity: a DiT given another VAE refuses the cache. The job
has ``videogen recaption``'s shape: ``ShardPassStream`` (whole shards by ``split_shards``) ->
:class:`~videogen.pipelines.encode_module.EncodeModule` -> :class:`~videogen.pipelines.shard_writer.LatentShardWriter`.

``--buckets-from CONFIG`` encodes each clip at its training bucket instead (the bucket table,
``frame_stride``, ``target_fps`` and ``span_clip`` of the config's ``data``, centre crops), so a DiT
config with that bucket table trains from the cache as it would from the pixels.

``--text-encoder DIR`` (``default``: the quickstart's all-MiniLM-L6-v2) also stores each sample's caption
embeddings (``text.txt.npy`` and ``text.<name>.npy`` for the json's named captions, float16 trimmed to
the valid tokens) and records the encoder (folder, sha256, width, ``--text-max-length``) and the encoded
``NULL_CAPTION`` in ``dataset.json``: a DiT trained on the cache loads no text encoder
(``videogen/data/text_embeddings.py``, ``videogen/text_encoding.py``).
"""

from __future__ import annotations

from pathlib import Path


def buckets_from(config: str | Path, overrides: list[str] = (), shards: str | list[str] = "-") -> dict:
    """The clip-shaping settings of a training config's ``data`` section, read as training reads it
    (:func:`videogen.data.config_section.load_data_config`: interpolation, ``--data.*`` overrides)."""
    from dataclasses import asdict

    from videogen.data.config_section import load_data_config

    dm = load_data_config(str(config), shards, overrides, option="--buckets-from")
    if not dm.bucketer.buckets:
        raise ValueError(f"--buckets-from {config}: its data section has no bucket table (data.init_args.bucketer.buckets)")
    return {"buckets": [asdict(b) for b in dm.bucketer.buckets], "frame_stride": dm.clips.frame_stride,
            "target_fps": dm.clips.target_fps, "span_clip": dm.clips.span_clip}


def check_same_text_encoder(out: Path, before: dict | None, now: dict | None) -> None:
    """A rerun into a cache folder keeps its caption embeddings' encoder, max length and layer (or their absence)."""
    same = (before is None) == (now is None) and (now is None or (
        isinstance(before, dict) and before.get("sha256") == now["sha256"]
        and before.get("max_length") == now["max_length"] and before.get("layer", -1) == now.get("layer", -1)))
    if not same:
        had = (f"caption embeddings of {before.get('source')} (--text-max-length {before.get('max_length')}, "
               f"--text-layer {before.get('layer', -1)})" if isinstance(before, dict) else "no caption embeddings")
        raise ValueError(f"{out}: holds a cache with {had}; encode with the same --text-encoder, "
                         "--text-max-length and --text-layer, or write this cache to a new folder")


def encode(vae: str, data: list[str] | str, out: str | Path, *, max_area: int = 256 * 256, max_frames: int = 33,
           size_multiple: int | None = None, frame_stride: int = 1, buckets: dict | None = None,
           chunk_frames: int | None = None, memory_budget: float | None = None,
           text_encoder: str | None = None, text_max_length: int = 64, text_layer: int = -1, num_workers: int = 1,
           accelerator: str = "auto", devices: str | int = "auto", num_nodes: int = 1, precision: str = "32-true",
           progress: bool = True) -> Path:
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from videogen.pipelines.shard_writer import LatentShardWriter, finished_shards
    from videogen.data.buckets import Bucket, Bucketer
    from videogen.data.loader import ShardPassStream, StreamOptions
    from videogen.data.manifest import DatasetManifest, provenance
    from videogen.data.out_folder import check_out_apart
    from videogen.data.shards import expand_urls
    from videogen.encoding import check_same_vae, vae_identity
    from videogen.models.latent_grid import LatentGrid
    from videogen.pipelines.encode_module import EncodeModule

    text = None
    if text_encoder is not None:  # hashed before anything loads: a rerun must use the same encoder
        from videogen.text_encoding import text_encoder_identity

        if text_max_length < 1:
            raise ValueError(f"--text-max-length {text_max_length}: must be >= 1")
        text = text_encoder_identity(text_encoder, text_max_length, text_layer)
    module = EncodeModule(vae, chunk_frames=chunk_frames, memory_budget=memory_budget,
                          text_encoder=None if text is None else text["source"], text_max_length=text_max_length,
                          text_layer=text_layer)
    check_out_apart(out, data)
    out = Path(out)
    identity = vae_identity(module.export)
    previous = DatasetManifest.find(out)
    if previous is not None:  # one cache holds the latents of one VAE
        check_same_vae(previous.created_by.get("vae"), module.export, f"{out}: latents were written by",
                       "write this cache to a new folder")
        check_same_text_encoder(out, previous.created_by.get("text_encoder"), text)
    urls = expand_urls(data)
    names = [Path(u).name for u in urls]
    if len(set(names)) != len(names):
        raise ValueError("input shards share file names (from different folders); encode each folder on its own")
    done = finished_shards(out)
    todo = [u for u in urls if Path(u).name not in done]
    vae_module = module.vae
    grid = LatentGrid.of_vae(vae_module)
    tc, sc, fm = grid.temporal_compression, grid.spatial_compression, grid.frame_multiple
    size_multiple = size_multiple or 2 * sc
    if size_multiple % sc:
        raise ValueError(f"--size-multiple {size_multiple} must be a multiple of the VAE's spatial compression {sc}")
    if buckets:  # the training buckets: batches of one bucket, centre crops
        table = [b if isinstance(b, Bucket) else Bucket(**b) for b in buckets["buckets"]]
        bad = [b.name for b in table if grid.problem(b.num_frames, b.height, b.width)]
        if bad:
            raise ValueError(f"buckets {bad} do not fit the VAE's compression ({tc}x{sc}x{sc}): frames must be "
                             f"1 + k*{fm}, sides multiples of {sc}")
        bucketer = Bucketer(table, batch_size=4)
        options = StreamOptions(frame_stride=buckets.get("frame_stride", 1), target_fps=buckets.get("target_fps"),
                                span_clip=buckets.get("span_clip", False), require_caption=False)
        settings = {"buckets": [b.name for b in table], **{k: v for k, v in buckets.items() if k != "buckets"}}
    else:
        bucketer = Bucketer(packing=True, token_budget=10**12, token_shape=grid.token_shape, max_area=max_area,
                            max_frames=max_frames, size_multiple=size_multiple, frame_multiple=fm)
        options = StreamOptions(frame_stride=frame_stride, require_caption=False)
        settings = {"max_area": max_area, "max_frames": max_frames, "size_multiple": size_multiple,
                    "frame_stride": frame_stride}
    created_by = {**provenance("encode", {"vae": vae, "data": data, **settings}), "vae": identity}
    if text is not None:  # its null caption is encoded on the predict device (EncodeModule.on_predict_start)
        from videogen.text_encoding import cache_record

        created_by["text_encoder"] = module.text_record = cache_record(module.text_encoder, text)
    out.mkdir(parents=True, exist_ok=True)
    if not todo:
        print(f"{out}: all {len(urls)} shards already encoded")
        if text is not None:  # as recorded (same encoder, checked above), else encoded here
            from videogen.text_encoding import null_record

            before = (previous.created_by.get("text_encoder") or {}) if previous is not None else {}
            created_by["text_encoder"]["null_caption"] = before.get("null_caption") or null_record(module.text_encoder)
        LatentShardWriter(out, names, created_by).write_manifest_if_done()
        return out
    print(f"encoding {len(todo)} of {len(urls)} shards ({len(urls) - len(todo)} already done) -> {out}")
    trainer = Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
                      logger=False, enable_progress_bar=progress, enable_model_summary=False,
                      callbacks=[LatentShardWriter(out, names, created_by)])
    stream = ShardPassStream(todo, bucketer, options=options, rank=trainer.global_rank, world_size=trainer.world_size)
    # Lightning would give an IterableDataset's loader a DistributedSampler it cannot use: the
    # stream splits shards by rank itself, so the loader is passed as it is.
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    return out
