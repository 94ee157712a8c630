"""Precomputed caption embeddings: `videogen encode --text-encoder` stores them in the latent cache, and a
DiT trained on that cache never constructs a text encoder (tiny random T5-encoder and CLIP-text folders,
tokenizers built with the `tokenizers` package); the loss from the cache equals the loss from the live
encoder for the same embeddings; bad arrays are counted skips; another encoder's cache is refused."""

import io
import json
import random
import tarfile
from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from torch.optim import AdamW

from conftest import clip_sample, tiny_export, write_tar
from models.pretrained_parts import tiny_clip, tiny_t5
from videogen.callbacks.export import StageExport
from videogen.cli import main
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule, stages
from videogen.data.decode import PyAVDecoder
from videogen.data.text_embeddings import TextSpec, read_embeddings
from videogen.errors import ConfigError
from videogen.models import text as text_module
from videogen.models.dit import DiT
from videogen.models.text import FrozenTextEncoder
from videogen.modules.dit import DiTModule

CAPTIONS = ["a red square moving left", "a blue circle moving right", "a red circle", "a blue square moving left"]
LONG = {0: "a blue circle moving right left", 2: "a red square moving right"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shards of 4 clips (two with a json ``long`` caption, one with an unstorable caption name), the
    VAE, and the T5 and CLIP folders."""
    root = tmp_path_factory.mktemp("textcache")
    shards = root / "shards"
    shards.mkdir()
    samples = []
    for i, caption in enumerate(CAPTIONS):
        s = clip_sample(f"k{i}", 48, 32, 9, seed=i)
        s["txt"] = caption
        if i in LONG:
            s["json"]["captions"] = {"long": LONG[i]}
        if i == 1:
            s["json"]["captions"] = {"Not Storable": "a red square", "empty": " "}
        samples.append(s)
    write_tar(shards / "shard-000000.tar", samples)
    return {"root": root, "shards": shards, "vae": tiny_export(root / "vae"),
            "t5": tiny_t5(root / "t5"), "clip": tiny_clip(root / "clip")}


def encode_cache(world, which, out_name, max_length=8):
    out = world["root"] / out_name
    if not (out / "dataset.json").is_file():
        assert main(["encode", "--vae", str(world["vae"]), "--data", str(world["shards"]), "--out", str(out),
                     "--max-area", str(48 * 32), "--max-frames", "9", "--num-workers", "0", "--accelerator", "cpu",
                     "--devices", "1", "--text-encoder", str(world[which]), "--text-max-length", str(max_length)]) == 0
    return out


def members(shard):
    out = {}
    with tarfile.open(shard) as tar:
        for m in tar:
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def datamodule(shards, val_shards=None, **loader):
    return VideoDataModule(str(shards), val_shards, bucketer=Bucketer([Bucket(9, 32, 48)], batch_size=2),
                           loader=LoaderOptions(**{"num_workers": 0, "shuffle_buffer": 2, **loader}))


def tiny_module(world, which, **kw):
    return DiTModule(DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=32), vae=str(world["vae"]),
                     text_encoder=str(world[which]), text_max_length=8,
                     optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0), **kw)


@pytest.fixture
def constructions(monkeypatch):
    """How many FrozenTextEncoders were built (and on which device their weights ended up)."""
    made = []
    original = FrozenTextEncoder.__init__

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(text_module.FrozenTextEncoder, "__init__", counting)
    return made


@pytest.mark.parametrize("which,cls", [("t5", "T5EncoderModel"), ("clip", "CLIPTextModel")])
def test_encode_stores_every_caption_then_fit_without_encoder_then_sample(which, cls, world, tmp_path,
                                                                         constructions):
    out = encode_cache(world, which, f"cache-{which}")
    record = json.loads((out / "dataset.json").read_text())["created_by"]["text_encoder"]
    assert record["width"] == 32 and record["max_length"] == 8 and record["class"] == cls
    assert record["source"] == str(world[which].resolve()) and len(record["sha256"]) == 64
    live = FrozenTextEncoder(str(world[which]), max_length=8)
    null_tokens, null_mask = live([""])
    assert np.array_equal(np.asarray(record["null_caption"]["tokens"], np.float16),
                          null_tokens[0, : int(null_mask.sum())].numpy().astype(np.float16))
    stored = members(out / "shard-000000.tar")
    for i, caption in enumerate(CAPTIONS):
        sample = stored[f"k{i}"]
        names = {e for e in sample if e.startswith("text.")}
        assert names == ({"text.txt.npy", "text.long.npy"} if i in LONG else {"text.txt.npy"})
        for name, text in (("txt", caption), ("long", LONG.get(i))):
            if text is None:
                continue
            z = np.load(io.BytesIO(sample[f"text.{name}.npy"]), allow_pickle=False)
            tokens, mask = live([text])
            n = int(mask.sum())
            assert z.dtype == np.float16 and z.shape == (n, 32) and n == len(text.split()) + 1  # words + </s>
            assert np.array_equal(z, tokens[0, :n].numpy().astype(np.float16))  # exactly the live encoder's, rounded

    constructions.clear()
    torch.manual_seed(0)
    module = tiny_module(world, which, text_embeddings="cache", captions={"txt": 0.5, "long": 0.5})
    trainer = Trainer(accelerator="cpu", max_steps=5, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=0,
                      callbacks=[StageExport(str(tmp_path / "export"))])
    trainer.fit(module, datamodule=datamodule(out))
    assert trainer.global_step == 5 and torch.isfinite(trainer.logged_metrics["train/loss"])
    assert constructions == [] and "text" not in module._frozen  # no text encoder was ever built in fit
    stats = json.loads((tmp_path / "export" / "stats.json").read_text())
    assert stats["text_encoder"] == str(world[which]) and stats["text_max_length"] == 8
    video = tmp_path / "out.mp4"
    assert main(["sample", "--ckpt", str(tmp_path / "export"), "--prompt", "a red square moving left", "--out",
                 str(video), "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "2"]) == 0
    assert [type(e.encoder).__name__ for e in constructions] == [cls]  # sampling encodes the new prompt
    info = PyAVDecoder().probe(video.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)


def test_cache_loss_equals_live_encoder_loss(world):
    """Same batch, seed and weights: the loss from the cached embeddings is the loss from the live encoder
    (its output rounded to float16 as the cache stores it), with dropped and named captions in the batch."""
    from videogen.modules.randomness import step_generator

    out = encode_cache(world, "t5", "cache-t5")
    torch.manual_seed(0)
    kw = dict(captions={"txt": 0.5, "long": 0.5}, caption_dropout=0.4, ema_decay=None)
    cached = tiny_module(world, "t5", text_embeddings="cache", **kw)
    live = tiny_module(world, "t5", text_embeddings="encoder", **kw)
    live.dit.load_state_dict(cached.dit.state_dict())
    dm = datamodule(out)
    cached._text_cache = cached._decide_text_cache(dm)
    assert live._decide_text_cache(dm) is None
    encoder = live.text_encoder
    exact = encoder.encode
    encoder.encode = lambda texts: (lambda t, m: (t.half().float(), m))(*exact(texts))  # the cache's float16
    picked = set()
    for batch in list(dm.train_dataloader())[:2]:
        batch = stages.to_float(batch)
        assert set(batch["text"][0]) >= {"txt"} and batch["text"][0]["txt"].dtype == torch.float16
        for seed in range(4):
            picked.update(cached.pick_caption_names(batch, random.Random(seed)))
            tc, mc = cached.caption_tokens(batch, random.Random(seed))
            tl, ml = live.caption_tokens(batch, random.Random(seed))
            assert torch.equal(mc, ml) and torch.equal(tc, tl)
            losses = [m.diffusion_loss(m.dit, batch, step_generator("cpu", seed, 0), random.Random(seed))[0]
                      for m in (cached, live)]
            assert torch.equal(losses[0], losses[1]) and torch.isfinite(losses[0]).all()
    assert {None, "txt", "long"} <= picked  # dropout, the original and a named caption were all compared
    assert torch.equal(cached.null_caption()[0], live.null_caption()[0])


def real_members(world):
    out = encode_cache(world, "t5", "cache-t5")
    return members(out / "shard-000000.tar")["k0"]


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)  # a hostile writer may pickle
    return buf.getvalue()


@pytest.mark.parametrize("bad,reason,words", [
    (np.zeros((3, 32), np.float32), "bad_text_embedding", "dtype float32"),
    (np.zeros((1, 3, 32), np.float16), "bad_text_embedding", "expected (tokens, 32)"),
    (np.zeros((3, 16), np.float16), "bad_text_embedding", "expected (tokens, 32)"),
    (np.zeros((9, 32), np.float16), "bad_text_embedding", "9 tokens"),
    (np.zeros((0, 32), np.float16), "bad_text_embedding", "0 tokens"),
    (np.full((2, 32), np.inf, np.float16), "bad_text_embedding", "non-finite"),
    (b"\x93NUMPY garbage", "bad_text_embedding", "not a readable array"),
    (np.array([{"a": 1}], dtype=object), "bad_text_embedding", "not a readable array"),  # a pickle: never loaded
    (None, "missing_text_embedding", "no text.long.npy"),
])
def test_bad_embeddings_are_counted_skips(bad, reason, words, world):
    good = real_members(world)
    sample = dict(good)
    if bad is None:
        del sample["text.long.npy"]
    else:
        sample["text.long.npy"] = bad if isinstance(bad, bytes) else npy(bad)
    skips = stages.Skips(keep=True)
    raws = [stages.RawSample("k0", "u", good), stages.RawSample("k9", "u", sample)]
    records = list(stages.parse(raws, skips, None, text_spec=TextSpec(32, 8)))
    assert [r.key for r in records] == ["k0"] and set(records[0].text) == {"txt", "long"}
    assert skips.counts == {reason: 1} and words in skips.records[0]["detail"]
    assert "text.long.npy" in skips.records[0]["detail"]
    # without a spec (no caption embeddings recorded) the members are not even read
    assert len(list(stages.parse(raws, stages.Skips(), None))) == 2


def test_a_bad_sample_is_skipped_in_training_batches(world, tmp_path):
    """Through the data module: the cache's dataset.json gives the spec; a too-long array is counted."""
    out = encode_cache(world, "t5", "cache-t5")
    bad = tmp_path / "bad"
    bad.mkdir()
    stored = members(out / "shard-000000.tar")
    stored["k1"]["text.txt.npy"] = npy(np.zeros((20, 32), np.float16))
    write_tar(bad / "shard-000000.tar", [{"__key__": k, **v} for k, v in stored.items()])
    (bad / "dataset.json").write_text((out / "dataset.json").read_text())
    dm = datamodule(bad, val_shards=str(bad), val_batches=1)
    loader = dm.val_dataloader()
    batches = list(loader)
    assert loader.skipped == {"bad_text_embedding": 1}
    assert {k for b in batches for k in b["key"]} <= {"k0", "k2", "k3"}
    assert all(t["txt"].shape[1] == 32 for b in batches for t in b["text"])


def test_another_encoders_cache_is_refused_before_any_step(world, tmp_path, constructions):
    out = encode_cache(world, "clip", "cache-clip")
    for kw, words in (({"text_encoder": str(world["t5"])}, "written by the text encoder at"),
                      ({"text_max_length": 6}, "--text-max-length 8"),
                      ({"text_layer": -2}, "hidden state -1, this DiT uses text_layer=-2"),):
        module = tiny_module(world, "clip", text_embeddings="auto")
        module.hparams.update(kw)
        trainer = Trainer(accelerator="cpu", max_steps=2, enable_progress_bar=False, logger=False,
                          default_root_dir=str(tmp_path), limit_val_batches=0)
        with pytest.raises(ConfigError, match=words):
            trainer.fit(module, datamodule=datamodule(out))
        assert trainer.global_step == 0
    wide = DiTModule(DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=48), vae=str(world["vae"]),
                     text_encoder=str(world["clip"]), text_max_length=8, text_embeddings="cache")
    with pytest.raises(ConfigError, match="48"):
        wide._decide_text_cache(datamodule(out))
    # text_embeddings: cache on pixel shards is refused; auto falls back to the encoder
    with pytest.raises(ConfigError, match="text_embeddings=cache"):
        tiny_module(world, "clip", text_embeddings="cache")._decide_text_cache(datamodule(world["shards"]))
    assert tiny_module(world, "clip")._decide_text_cache(datamodule(world["shards"])) is None
    hub = tiny_module(world, "clip")
    hub.hparams.text_encoder = "someone/clip-on-the-hub"
    with pytest.raises(ConfigError, match="need a local model folder"):
        hub._decide_text_cache(datamodule(out))
    assert constructions == []


def test_hostile_manifest_records_are_refused(world, tmp_path):
    out = encode_cache(world, "t5", "cache-t5")
    for change, words in ((lambda r: r["null_caption"].update(tokens=[[1e9] * 31]), "null_caption.tokens"),
                          (lambda r: r["null_caption"].update(tokens="x"), "null_caption.tokens"),
                          (lambda r: r.update(width="32"), "width")):
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        bad.mkdir()
        (bad / "shard-000000.tar").write_bytes((out / "shard-000000.tar").read_bytes())
        manifest = json.loads((out / "dataset.json").read_text())
        change(manifest["created_by"]["text_encoder"])
        (bad / "dataset.json").write_text(json.dumps(manifest))
        with pytest.raises(ConfigError, match=words):
            tiny_module(world, "t5", text_embeddings="cache")._decide_text_cache(datamodule(bad))
        if words == "width":  # the data module reads the same record: refused there too
            with pytest.raises(ValueError, match="created_by.text_encoder.width='32'"):
                datamodule(bad).train_dataloader()


def test_val_prompts_are_encoded_once_at_setup_on_the_cpu(world, tmp_path, constructions):
    out = encode_cache(world, "t5", "cache-t5")
    torch.manual_seed(0)
    module = tiny_module(world, "t5", val_prompts=["a red square", "a blue circle"], val_steps=2, val_shape=(9, 32, 48))
    trainer = Trainer(accelerator="cpu", max_steps=2, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=1, val_check_interval=2,
                      check_val_every_n_epoch=None, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=VideoDataModule(str(out), val_shards=str(out),
                                                   bucketer=Bucketer([Bucket(9, 32, 48)], batch_size=2),
                                                   loader=LoaderOptions(num_workers=0, val_batches=1)))
    assert trainer.global_step == 2 and torch.isfinite(trainer.logged_metrics["val/loss"])
    assert len(constructions) == 1 and "text" not in module._frozen  # built once at setup, then let go
    live = FrozenTextEncoder(str(world["t5"]), max_length=8)
    tokens, mask = module.prompt_text(["a blue circle"])
    expected, expected_mask = live(["a blue circle"])
    assert torch.equal(mask, expected_mask) and torch.allclose(tokens, expected)
    with pytest.raises(RuntimeError, match="not encoded at setup"):
        module.prompt_text(["a green square"])


def test_encode_refuses_to_mix_encoders_and_hub_names(world, tmp_path, capsys):
    out = encode_cache(world, "t5", "cache-t5")
    args = ["encode", "--vae", str(world["vae"]), "--data", str(world["shards"]), "--out", str(out),
            "--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]
    record = json.loads((out / "dataset.json").read_text())["created_by"]["text_encoder"]
    assert main(args + ["--text-encoder", str(world["t5"]), "--text-max-length", "8"]) == 0  # all done: kept
    assert json.loads((out / "dataset.json").read_text())["created_by"]["text_encoder"] == record
    assert main(args + ["--text-encoder", str(world["clip"]), "--text-max-length", "8"]) == 2
    assert "holds a cache with caption embeddings of" in capsys.readouterr().out
    assert main(args) == 2  # latents only, into a cache with embeddings
    assert "same --text-encoder" in capsys.readouterr().out
    assert main(args[:6] + [str(tmp_path / "new"), *args[7:], "--text-encoder", "someone/t5-hub-name"]) == 2
    assert "need a local model folder" in capsys.readouterr().out
    assert main(args[:6] + [str(tmp_path / "new"), *args[7:], "--text-encoder", str(world["t5"]),
                "--text-max-length", "0"]) == 2


def test_a_cache_of_another_hidden_state_is_written_and_read_by_text_layer(world):
    """``videogen encode --text-layer -2`` stores the encoder's penultimate hidden state and records it; a DiT
    with ``text_layer: -2`` reads that cache (its embeddings equal the live encoder's at that layer), one
    with the default last layer is refused, and a rerun into the folder with another layer is refused."""
    out = world["root"] / "cache-clip-penultimate"
    args = ["encode", "--vae", str(world["vae"]), "--data", str(world["shards"]), "--out", str(out),
            "--max-area", str(48 * 32), "--max-frames", "9", "--num-workers", "0", "--accelerator", "cpu",
            "--devices", "1", "--text-encoder", str(world["clip"]), "--text-max-length", "8"]
    assert main([*args, "--text-layer", "-2"]) == 0
    record = json.loads((out / "dataset.json").read_text())["created_by"]["text_encoder"]
    assert record["layer"] == -2
    cache = tiny_module(world, "clip", text_layer=-2)._decide_text_cache(datamodule(out))
    live = FrozenTextEncoder(str(world["clip"]), 8, layer=-2)
    tokens, mask = live([""])
    assert torch.equal(cache["null"].float(), tokens[0, : int(mask.sum())].half().float())
    with pytest.raises(ConfigError, match="hidden state -2, this DiT uses text_layer=-1"):
        tiny_module(world, "clip")._decide_text_cache(datamodule(out))
    with pytest.raises(ValueError, match="--text-layer -2"):
        from videogen.pipelines.encode import encode
        encode(str(world["vae"]), str(world["shards"]), out, max_area=48 * 32, max_frames=9, num_workers=0,
               text_encoder=str(world["clip"]), text_max_length=8, text_layer=-1, accelerator="cpu", devices=1)
