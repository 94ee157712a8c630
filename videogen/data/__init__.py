"""The streaming video data layer: shards -> samples -> bucketed batches.

``VideoDataModule`` and the values it is built from (``Bucket``, ``Bucketer``, ``StreamOptions``,
``LoaderOptions``) load lazily, so tools that only need ``decode``, ``manifest`` or ``writer`` (the
data recipes and their worker processes) do not import Lightning.
"""

__all__ = ["Bucket", "Bucketer", "LoaderOptions", "StreamOptions", "VideoDataModule"]


def __getattr__(name: str):
    if name in ("Bucket", "Bucketer"):
        from videogen.data import buckets

        return getattr(buckets, name)
    if name in ("LoaderOptions", "StreamOptions"):
        from videogen.data import loader

        return getattr(loader, name)
    if name == "VideoDataModule":
        from videogen.data.datamodule import VideoDataModule

        return VideoDataModule
    raise AttributeError(f"module 'videogen.data' has no attribute {name!r}")
