"""``make-shards`` step 3: write one planned shard (clips re-encoded, other media stored as they are).

Each shard is written atomically (``TarShardWriter``); when it is on disk a
``.make-shards/shard-NNNNNN.done.json`` records its statistics and the files it skipped.
"""

from __future__ import annotations

import io
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from videogen.data.decode import DecodeError
from videogen.data.writer import TarShardWriter, numbered_shard_name

STATE_DIR = ".make-shards"
CLIP_CODEC, CLIP_CRF, CLIP_PRESET = "libx264", 18, "veryfast"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def cut_clips(data: bytes, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, bytes, dict]]:
    """Re-encode frame ranges ``[f0, f1)`` of a video as H.264 mp4 clips in one decoding pass.
    Yields ``(range index, mp4 bytes, {"width", "height", "num_frames"})``; a range the video
    ends before is not yielded (a range it ends inside comes out shorter)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate)
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2  # yuv420p
        k, enc = 0, None
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i < ranges[k][0]:
                    continue
                if enc is None:
                    enc = _ClipEncoder(rate, width, height)
                enc.add(frame)
                if i + 1 == ranges[k][1]:
                    clip, enc = enc.finish(), None
                    yield (k, *clip)
                    k += 1
                    if k == len(ranges):
                        return
            if enc is not None:
                clip, enc = enc.finish(), None
                yield (k, *clip)
        finally:
            if enc is not None:  # stopped mid-clip (an error, or the consumer gave up)
                enc.discard()


class _ClipEncoder:
    def __init__(self, rate: Fraction, width: int, height: int):
        import av

        self.buf = io.BytesIO()
        self.out = av.open(self.buf, mode="w", format="mp4")  # (faststart needs a real file)
        self.stream = self.out.add_stream(CLIP_CODEC, rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(CLIP_CRF), "preset": CLIP_PRESET}
        self.time_base, self.n = 1 / rate, 0

    def add(self, frame) -> None:
        import av

        if (frame.width, frame.height) != (self.stream.width, self.stream.height):  # odd size: crop 1 px
            rgb = frame.to_ndarray(format="rgb24")[: self.stream.height, : self.stream.width]  # (H, W, 3)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.n, self.time_base
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.n += 1

    def discard(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001  (half-written clip being thrown away; nothing to report)
            pass

    def finish(self) -> tuple[bytes, dict]:
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()
        return self.buf.getvalue(), {"width": self.stream.width, "height": self.stream.height, "num_frames": self.n}


def _meta(sample: dict, **override) -> dict:
    meta = {k: sample["info"][k] for k in ("width", "height", "fps", "num_frames", "duration", "codec")}
    meta.update(override, source=sample["source"])
    return meta


def _samples_of_shard(src: Path, items: list[dict], skipped: list[dict]) -> Iterator[dict]:
    """The shard's samples in plan order; clips of one source are cut in one decoding pass."""
    import av

    i = 0
    while i < len(items):
        s = items[i]
        group = [s]
        while "clip" in s and i + len(group) < len(items) and items[i + len(group)].get("clip") \
                and items[i + len(group)]["source"] == s["source"]:
            group.append(items[i + len(group)])
        i += len(group)
        try:
            data = (src / s["source"]).read_bytes()
            if len(data) != s["size"]:
                raise DecodeError(f"source changed since it was probed ({s['size']} -> {len(data)} bytes)")
            if "clip" not in s:
                yield {"__key__": s["key"], s["ext"]: data, "txt": s["caption"], "json": _meta(s)}
                continue
            done = set()
            fps = s["info"]["fps"]
            for k, mp4, got in cut_clips(data, [tuple(c["clip"]) for c in group]):
                c, done = group[k], done | {k}
                f0 = c["clip"][0]
                yield {"__key__": c["key"], "mp4": mp4, "txt": c["caption"],
                       "json": _meta(c, **got, duration=got["num_frames"] / fps, codec="h264",
                                     clip=[round(f0 / fps, 6), round((f0 + got["num_frames"]) / fps, 6)])}
            missing = [c for k, c in enumerate(group) if k not in done]
            if missing:
                raise DecodeError(f"video ended before frame {missing[0]['clip'][0]}")
        except (OSError, ValueError, DecodeError, av.FFmpegError) as e:
            skipped.append({"file": s["source"], "reason": "write failed", "detail": str(e)[:300]})


def write_shard(src: str, out: str, index: int, items: list[dict]) -> dict:
    """Write shard ``index`` atomically, then its done record; returns the record
    ``{"name", "stats", "skipped"}``."""
    out_dir, skipped = Path(out), []
    with TarShardWriter(out_dir / numbered_shard_name(index)) as writer:
        for sample in _samples_of_shard(Path(src), items, skipped):
            writer.write(sample)
    record = {"name": writer.path.name, "stats": writer.stats.to_dict(), "skipped": skipped}
    write_json(out_dir / STATE_DIR / f"{writer.path.stem}.done.json", record)
    return record


def write_shard_job(job: tuple[str, str, int, list[dict]]) -> dict:
    return write_shard(*job)
