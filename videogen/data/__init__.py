"""The streaming video data layer: shards -> samples -> bucketed batches."""

from videogen.data.buckets import Bucket, Bucketer
from videogen.data.datamodule import VideoDataModule

__all__ = ["Bucket", "Bucketer", "VideoDataModule"]
