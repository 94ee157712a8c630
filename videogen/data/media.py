"""Frames -> media bytes, the inverse of :mod:`videogen.data.decode`: H.264 mp4 and PNG.

:func:`encode_mp4` gives the same bytes for the same frames: the synthetic set (``data_recipes/synthetic.py``)
and ``videogen sample`` write their clips with it. Clips are H.264 (libx264, yuv420p, one thread, no
B-frames, no lookahead, no assembly) in mp4, encoded with PyAV; the RGB -> yuv420p conversion is done
here in numpy (:func:`rgb_to_yuv420p`), so the encoder's input is exactly known. A change to either
changes the synthetic samples (bump ``data_recipes.synthetic.RECIPE_VERSION``).
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

_BT601 = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H * 3 // 2, W) uint8 planar yuv420p, BT.601 limited range.

    Done here rather than by swscale inside the encoder, so the encoder's input is exactly known
    (the conversion and its rounding written down here, not a property of the FFmpeg build)."""
    t, h, w, _ = frames.shape
    ycc = frames.astype(np.float64) @ _BT601.T + np.array([16.0, 128.0, 128.0])  # (T, H, W, 3)
    chroma = ycc[..., 1:].reshape(t, h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))  # (T, H/2, W/2, 2)
    planes = [ycc[..., 0].reshape(t, h * w), chroma[..., 0].reshape(t, -1), chroma[..., 1].reshape(t, -1)]
    yuv = np.clip(np.rint(np.concatenate(planes, axis=1)), 0, 255).astype(np.uint8)  # (T, H*W*3/2)
    return yuv.reshape(t, h * 3 // 2, w)


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """(T, H, W, 3) uint8 RGB -> H.264 mp4 bytes (yuv420p), the same bytes for the same frames."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # One thread, no B-frames. No lookahead/mb-tree and no assembly: with them on, the same input
        # encoded to different bytes depending on what this process had encoded before (measured:
        # 6 of 40 clips differed between runs in another order; 0 of 100 with these settings).
        stream = container.add_stream("libx264", rate=fps, options={
            "crf": "18", "preset": "veryfast", "threads": "1", "bf": "0",
            "x264-params": "rc-lookahead=0:mbtree=0:asm=0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1
        for i, yuv in enumerate(rgb_to_yuv420p(frames)):
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)  # without explicit pts x264's output varies run to run
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return buf.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()
