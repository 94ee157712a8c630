"""Pretrained diffusers video VAEs from a local folder, read as hostile data, as an :class:`Export`.

A diffusers VAE folder (what ``save_pretrained`` writes, or the ``vae/`` folder of a downloaded
pipeline) holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or safetensors shards
named by ``diffusion_pytorch_model.safetensors.index.json``). It is loaded only when

* ``config.json`` is a JSON object under :data:`MAX_CONFIG_BYTES` whose ``_class_name`` is one of
  :data:`VAE_CLASSES` (nothing else in the folder picks code: no ``trust_remote_code``, no custom
  class, no pickle -- ``.bin`` / ``.pt`` weights are refused);
* the weights are safetensors whose names and shapes are the ones the config's model has (checked
  on the meta device before anything is allocated).

Its identity is a sha256 over ``config.json`` and the weight files (names and bytes), so a latent
cache written with other weights or another config is refused. Statistics for the DiT come from
the config exactly as the diffusers pipelines normalise latents (:func:`config_stats`), or from a
file written by ``videogen vae-stats`` that measured them on the user's data
(:func:`load_measured_stats`): given such a file as ``--vae``, its measured statistics are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from videogen.errors import RefusedFile
from videogen.pretrained import Export, read_json, sha256_files, state_mismatch

VAE_CLASSES = ("AutoencoderKLWan", "AutoencoderKLCogVideoX", "AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo")
CONFIG_JSON = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_CONFIG_BYTES = 1 << 20   # a VAE's config.json is a few KB
MAX_STATS_BYTES = 1 << 20    # a measured-statistics file: a few hundred numbers
MAX_SHARDS = 64
STATS_FORMAT = "videogen.vae_stats/1"


def is_diffusers_folder(path: str | os.PathLike) -> bool:
    """A folder with a diffusers ``config.json`` or ``diffusion_pytorch_model.*`` weights, and no videogen
    ``config.yaml`` (what it lacks is then told by :func:`load_diffusers_vae`)."""
    path = Path(path)
    return path.is_dir() and not (path / "config.yaml").exists() and (
        (path / CONFIG_JSON).is_file() or any(path.glob("diffusion_pytorch_model*")))


def is_measured_stats(path: str | os.PathLike) -> bool:
    """A file that ``videogen vae-stats`` wrote (a ``.json`` file, not a folder)."""
    path = Path(path)
    return path.is_file() and path.suffix == ".json"


def read_config(folder: Path) -> tuple[dict[str, Any], str]:
    """``(config, class name)`` of a diffusers VAE folder, the class from the allowlist."""
    path = folder / CONFIG_JSON
    if not path.is_file():
        raise RefusedFile(f"{folder}: no {CONFIG_JSON}; a diffusers VAE folder holds config.json and "
                          f"{WEIGHTS} (the vae/ folder of a downloaded pipeline)")
    config = read_json(path, MAX_CONFIG_BYTES)
    name = config.get("_class_name")
    if name not in VAE_CLASSES:
        raise RefusedFile(f"{path}: _class_name {name!r} is not a supported video VAE (one of "
                          f"{', '.join(VAE_CLASSES)}); give the vae/ folder of a Wan, CogVideoX, LTX-Video or "
                          "HunyuanVideo pipeline")
    return config, name


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a diffusers folder: the single file, or the shards its index names."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / WEIGHTS_INDEX).is_file():
        index = read_json(folder / WEIGHTS_INDEX, MAX_CONFIG_BYTES << 4)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise RefusedFile(f"{folder / WEIGHTS_INDEX}: no weight_map object")
        names = sorted({v if isinstance(v, str) else repr(v) for v in weight_map.values()})
        bad = [n for n in names if Path(n).name != n or not n.endswith(".safetensors") or not (folder / n).is_file()]
        if bad or len(names) > MAX_SHARDS:
            raise RefusedFile(f"{folder / WEIGHTS_INDEX}: names {bad[:3] or f'{len(names)} shards'}: shards must be "
                              f"at most {MAX_SHARDS} .safetensors files in the same folder")
        return [folder / n for n in names]
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise RefusedFile(f"{folder}: holds only pickle weights ({', '.join(pickled[:3])}), which videogen never "
                          "loads; download the .safetensors weights or convert them (load and save_pretrained with "
                          "safe_serialization=True on a machine you trust)")
    raise RefusedFile(f"{folder}: no {WEIGHTS} (or {WEIGHTS_INDEX}); give the folder that holds the VAE's weights")


def _read_safetensors(files: list[Path], header_only: bool) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    out: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for k in f.keys():
                    if k in out:
                        raise RefusedFile(f"{path}: tensor {k!r} is also in another shard")
                    out[k] = (torch.empty(f.get_slice(k).get_shape(), device="meta") if header_only
                              else f.get_tensor(k))
        except (SafetensorError, OSError, ValueError) as e:
            raise RefusedFile(f"{path}: not readable safetensors ({str(e).splitlines()[0][:200]})") from None
    return out


def build_model(folder: Path, config: dict[str, Any], name: str, files: list[Path]) -> torch.nn.Module:
    """The allowlisted diffusers class built from ``config`` and loaded with the safetensors ``files``;
    shapes are compared on the meta device first, so a config sized unlike its weights allocates nothing."""
    import diffusers

    cls = getattr(diffusers, name)  # name is one of VAE_CLASSES
    where = f"{folder / CONFIG_JSON}"
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(config)
    except Exception as e:  # a value the constructor cannot take
        raise RefusedFile(f"{where}: {name} cannot be built from it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    problem = state_mismatch(skeleton.state_dict(), _read_safetensors(files, header_only=True))
    if problem:
        raise RefusedFile(f"{folder}: the weights do not fit the {name} its config.json describes: {problem}")
    model = cls.from_config(config)
    model.load_state_dict(_read_safetensors(files, header_only=False))
    return model.eval()


def config_stats(vae: torch.nn.Module) -> dict[str, Any]:
    """Per-channel mean and std such that ``(z - mean) / std`` is what the diffusers pipeline feeds its
    transformer, for a :class:`~videogen.models.vae.diffusers_vae.DiffusersVideoVAE`:

    * Wan (``WanPipeline``): ``(z - latents_mean) * (1 / latents_std)`` from config.json;
    * CogVideoX (``CogVideoXPipeline``): ``z * scaling_factor`` -> mean 0, std ``1 / scaling_factor``;
    * LTX-Video (``LTXPipeline._normalize_latents``): ``(z - latents_mean) * scaling_factor / latents_std``
      with the model's ``latents_mean`` / ``latents_std`` buffers (saved with its weights);
    * HunyuanVideo (``HunyuanVideoPipeline``): ``z * scaling_factor``.

    ``shift_factor`` is not used: none of these pipelines applies it.
    """
    model, c = vae.model, vae.model.config
    n = vae.latent_channels
    if vae.class_name == "AutoencoderKLWan":
        mean, std, rule = list(c.latents_mean), list(c.latents_std), "WanPipeline: (z - latents_mean) / latents_std"
    elif vae.class_name == "AutoencoderKLLTXVideo":
        sf = float(c.scaling_factor)
        mean = model.latents_mean.float().tolist()
        std = (model.latents_std.float() / sf).tolist()
        rule = "LTXPipeline: (z - latents_mean) * scaling_factor / latents_std"
    else:
        sf = float(c.scaling_factor)
        mean, std = [0.0] * n, [1.0 / sf] * n
        rule = f"{'CogVideoXPipeline' if vae.class_name == 'AutoencoderKLCogVideoX' else 'HunyuanVideoPipeline'}: " \
               "z * scaling_factor"
    if len(mean) != n or len(std) != n or not all(isinstance(v, (int, float)) for v in (*mean, *std)) \
            or min(std) <= 0:
        raise RefusedFile(f"{vae.class_name}: latents_mean/latents_std must be {n} numbers each (std > 0), got "
                          f"{len(mean)} and {len(std)}")
    return {"latent_channels": n, "temporal_compression": vae.temporal_compression,
            "spatial_compression": vae.spatial_compression, "latent_mean": [float(v) for v in mean],
            "latent_std": [float(v) for v in std], "scaling_factor": float(getattr(c, "scaling_factor", 1.0) or 1.0),
            "frame_multiple": vae.frame_multiple, "stats_from": f"config ({rule})"}


def load_diffusers_vae(folder: str | os.PathLike) -> Export:
    """A diffusers VAE folder as an :class:`Export` whose module is a ``DiffusersVideoVAE``."""
    from videogen.models.vae.diffusers_vae import DiffusersVideoVAE

    folder = Path(folder)
    config, name = read_config(folder)
    files = weight_files(folder)
    vae = DiffusersVideoVAE(build_model(folder, config, name, files))
    vae.requires_grad_(False).eval()
    digest = sha256_files([folder / CONFIG_JSON, *files])  # config.json and the weights, name and bytes
    manifest = {"class_path": f"diffusers.{name}", "weights_sha256": digest,
                "weights_files": [p.name for p in files], "inputs": {"diffusers_folder": str(folder.resolve())}}
    return Export(vae, config_stats(vae), manifest, {"class_path": f"diffusers.{name}", "init_args": config},
                  folder.resolve())


def load_measured_stats(path: str | os.PathLike) -> Export:
    """The diffusers VAE a ``videogen vae-stats`` file names, with the statistics measured there. The
    file's ``weights_sha256`` must be the folder's: stats measured with other weights are refused."""
    path = Path(path).resolve()
    record = read_json(path, MAX_STATS_BYTES)
    if record.get("format") != STATS_FORMAT or not isinstance(record.get("vae"), str):
        raise RefusedFile(f"{path}: not a statistics file written by `videogen vae-stats` (format {STATS_FORMAT!r} "
                          "with the VAE folder under 'vae')")
    folder = Path(record["vae"])
    folder = folder if folder.is_absolute() else path.parent / folder
    if not is_diffusers_folder(folder):
        raise RefusedFile(f"{path}: names the VAE folder {folder}, which is not a diffusers VAE folder (moved?): "
                          "edit 'vae' or measure again with `videogen vae-stats`")
    export = load_diffusers_vae(folder)
    if record.get("weights_sha256") != export.manifest["weights_sha256"]:
        raise RefusedFile(f"{path}: measured with other weights than those now at {folder} (sha256 "
                          f"{str(record.get('weights_sha256'))[:12]} vs {export.manifest['weights_sha256'][:12]}): "
                          "measure again with `videogen vae-stats`")
    n = export.stats["latent_channels"]
    mean, std = record.get("latent_mean"), record.get("latent_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*mean, *std))
            and all(v > 0 for v in std)):
        raise RefusedFile(f"{path}: latent_mean and latent_std must be {n} numbers each (std > 0)")
    export.stats = {**export.stats, "latent_mean": [float(v) for v in mean], "latent_std": [float(v) for v in std],
                    "stats_from": f"measured ({path}, {record.get('measured_clips')} clips)"}
    export.manifest["inputs"]["measured_stats"] = str(path)
    export.folder = path
    return export
