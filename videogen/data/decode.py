"""Decode media from in-memory bytes: one small interface, decord first, PyAV as the fallback.

Every decoder answers two questions about a blob of bytes:

* ``probe(data) -> MediaInfo``: width, height, fps, frame count, duration and codec, read from
  the container without decoding every frame;
* ``decode(data, indices, size=None) -> np.ndarray``: the frames at ``indices`` as ``(T, H, W, 3)``
  uint8 RGB, optionally scaled to ``size=(height, width)`` by the decoder itself (cheaper than
  decoding at full size and resizing afterwards).

Images (jpg/png/webp) are one-frame videos and go through Pillow, which refuses an image over
``max_pixels`` from its header, before decoding it (Pillow's own decompression-bomb limit is set to
the same number). ``decode`` takes an optional ``stop`` event: a decode checks it between chunks of
frames and gives up (``DecodeStopped``) once it is set, so a decode that timed out does not run on.
Nothing here unpickles anything.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
DEFAULT_MAX_PIXELS = 64 * 2**20  # an image over this is refused (the loader raises it for large buckets)
STOP_CHECK_FRAMES = 8  # frames decoded between two looks at the stop event


def pixel_limit(largest_area: int) -> int:
    """The image pixel limit for buckets whose largest frame is ``largest_area`` pixels: 64x the
    area, and never under the default (so ordinary photos of any bucket table still load)."""
    return max(DEFAULT_MAX_PIXELS, 64 * int(largest_area))


class DecodeError(RuntimeError):
    """The bytes are not decodable media (corrupt, truncated, empty, or of the wrong type)."""


class DecodeStopped(DecodeError):
    """The decode was told to stop (its time ran out) and did, between two chunks of frames."""


def _check_stop(stop) -> None:
    if stop is not None and stop.is_set():
        raise DecodeStopped("decode stopped: its time ran out")


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    codec: str

    def to_dict(self) -> dict:
        return asdict(self)


class MediaDecoder(Protocol):
    name: str

    def probe(self, data: bytes) -> MediaInfo: ...

    def decode(self, data: bytes, indices: Sequence[int], size: tuple[int, int] | None = None,
               stop=None) -> np.ndarray: ...


def _check_nonempty(data: bytes) -> None:
    if not data:
        raise DecodeError("empty media member (0 bytes)")


class DecordDecoder:
    """decord's VideoReader over the bytes (single thread per reader: the loader parallelises by worker)."""

    name = "decord"

    def __init__(self, num_threads: int = 1):
        import decord  # noqa: F401  (import error surfaces at construction, not mid-epoch)

        self.num_threads = num_threads

    def _reader(self, data: bytes, size: tuple[int, int] | None = None):
        import decord

        _check_nonempty(data)
        kwargs = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
        try:
            return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=self.num_threads, **kwargs)
        except Exception as e:  # decord raises DECORDError (a RuntimeError) or others on bad input
            raise DecodeError(f"decord could not open the video: {str(e).splitlines()[0][:200]}") from e

    def probe(self, data: bytes) -> MediaInfo:
        vr = self._reader(data)
        n = len(vr)
        if n <= 0:
            raise DecodeError("video has no frames")
        h, w = vr[0].shape[:2]  # decord exposes no shape without decoding one frame
        fps = float(vr.get_avg_fps() or 0.0)
        return MediaInfo(width=w, height=h, fps=fps, num_frames=n, duration=n / fps if fps > 0 else 0.0, codec="")

    def decode(self, data: bytes, indices: Sequence[int], size: tuple[int, int] | None = None,
               stop=None) -> np.ndarray:
        vr = self._reader(data, size)
        n = len(vr)
        indices = list(indices)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise DecodeError(f"frame indices {bad[:3]} out of range for a video of {n} frames")
        chunks = []
        for i in range(0, len(indices), STOP_CHECK_FRAMES):
            _check_stop(stop)
            try:
                chunks.append(vr.get_batch(indices[i: i + STOP_CHECK_FRAMES]).asnumpy())
            except Exception as e:
                raise DecodeError(f"decord failed mid-stream: {str(e).splitlines()[0][:200]}") from e
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)  # (T, H, W, 3) uint8


class PyAVDecoder:
    """PyAV (FFmpeg) decoding; scaling is done by swscale inside ``frame.reformat``."""

    name = "pyav"

    def __init__(self, thread_type: str = "AUTO"):
        import av  # noqa: F401

        self.thread_type = thread_type

    @contextmanager
    def _opened(self, data: bytes, failure: str):
        """The open container, closed afterwards; an error other than a :class:`DecodeError` (stops
        included) becomes one that starts with ``failure``."""
        import av

        _check_nonempty(data)
        try:
            container = av.open(io.BytesIO(data), mode="r")
        except Exception as e:
            raise DecodeError(f"PyAV could not open the media: {str(e)[:200]}") from e
        try:
            if not container.streams.video:
                raise DecodeError("no video stream in the container")
            yield container
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"{failure}: {str(e)[:200]}") from e
        finally:
            container.close()

    def probe(self, data: bytes) -> MediaInfo:
        with self._opened(data, "PyAV could not probe the media") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            n = int(stream.frames or 0)
            duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
            if duration <= 0 and container.duration:
                duration = container.duration / 1_000_000
            if n <= 0:  # some containers do not store a frame count: count packets
                n = sum(1 for p in container.demux(stream) if p.size > 0)
            if n <= 0:
                raise DecodeError("video has no frames")
            if duration <= 0 and fps > 0:
                duration = n / fps
            ctx = stream.codec_context
            return MediaInfo(width=ctx.width, height=ctx.height, fps=fps, num_frames=n, duration=duration, codec=ctx.name)

    def decode(self, data: bytes, indices: Sequence[int], size: tuple[int, int] | None = None,
               stop=None) -> np.ndarray:
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            raise DecodeError("no frame indices requested")
        got: dict[int, np.ndarray] = {}
        with self._opened(data, "PyAV failed mid-stream") as container:
            stream = container.streams.video[0]
            stream.thread_type = self.thread_type
            wanted_set, last = set(wanted), wanted[-1]
            for i, frame in enumerate(container.decode(stream)):
                if i > last:
                    break
                _check_stop(stop)
                if i not in wanted_set:
                    continue
                if size is not None:
                    frame = frame.reformat(width=int(size[1]), height=int(size[0]))
                got[i] = frame.to_ndarray(format="rgb24")
        missing = [i for i in wanted if i not in got]
        if missing:
            raise DecodeError(f"video ended before frame {missing[0]} ({len(got)} frames decoded)")
        return np.stack([got[int(i)] for i in indices])


class ImageDecoder:
    """Still images as one-frame videos; an image over ``max_pixels`` is refused before it is decoded."""

    name = "pillow"

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = int(max_pixels)

    def _open(self, data: bytes):
        import warnings

        from PIL import Image

        _check_nonempty(data)
        Image.MAX_IMAGE_PIXELS = self.max_pixels  # Pillow's own bomb check (it errors past twice this)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))  # reads the header only
                if img.width * img.height > self.max_pixels:
                    raise DecodeError(f"image of {img.width}x{img.height} = {img.width * img.height} pixels is over "
                                      f"the limit of {self.max_pixels} (data.init_args.clips.max_image_pixels); refused undecoded")
                img.load()
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow saw it first
            raise DecodeError(f"image is over the limit of {self.max_pixels} pixels (data.init_args.clips.max_image_pixels): "
                              f"{str(e)[:120]}; refused undecoded") from None
        except Exception as e:
            raise DecodeError(f"Pillow could not decode the image: {str(e)[:200]}") from e
        return img.convert("RGB")

    def probe(self, data: bytes) -> MediaInfo:
        img = self._open(data)
        return MediaInfo(width=img.width, height=img.height, fps=0.0, num_frames=1, duration=0.0, codec="image")

    def decode(self, data: bytes, indices: Sequence[int], size: tuple[int, int] | None = None,
               stop=None) -> np.ndarray:
        from PIL import Image

        if any(i != 0 for i in indices):
            raise DecodeError(f"an image has one frame; asked for {list(indices)[:3]}")
        img = self._open(data)
        if size is not None:
            img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
        return np.asarray(img)[None].repeat(len(indices), axis=0)


class FallbackDecoder:
    """Try each decoder in turn; the error of the last one is raised if all fail."""

    def __init__(self, decoders: Sequence[MediaDecoder]):
        if not decoders:
            raise ValueError("FallbackDecoder needs at least one decoder")
        self.decoders = list(decoders)
        self.name = "+".join(d.name for d in self.decoders)

    def _first(self, method: str, *args):
        err: Exception | None = None
        for d in self.decoders:
            try:
                return getattr(d, method)(*args)
            except DecodeStopped:
                raise
            except DecodeError as e:
                err = e
        assert err is not None
        raise err

    def probe(self, data: bytes) -> MediaInfo:
        return self._first("probe", data)

    def decode(self, data: bytes, indices: Sequence[int], size: tuple[int, int] | None = None,
               stop=None) -> np.ndarray:
        return self._first("decode", data, indices, size, stop)


def make_decoder(backend: str = "auto") -> MediaDecoder:
    """``auto``: decord with PyAV as the fallback (PyAV alone where decord is not installed)."""
    if backend == "decord":
        return DecordDecoder()
    if backend == "pyav":
        return PyAVDecoder()
    if backend == "auto":
        try:
            return FallbackDecoder([DecordDecoder(), PyAVDecoder()])
        except ImportError:
            return PyAVDecoder()
    raise ValueError(f"unknown decoder backend {backend!r}: expected 'auto', 'decord' or 'pyav'")


def decoder_for(ext: str, video_decoder: MediaDecoder, max_pixels: int = DEFAULT_MAX_PIXELS) -> MediaDecoder:
    ext = ext.lower()
    if ext in IMAGE_EXTENSIONS:
        return ImageDecoder(max_pixels)
    if ext in VIDEO_EXTENSIONS:
        return video_decoder
    raise DecodeError(f"unsupported media extension {ext!r}")
