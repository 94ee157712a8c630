"""videogen: train Sora-style text-to-video models end to end."""

__version__ = "0.1.0"
