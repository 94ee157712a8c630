"""LightningModules, one per stage (loaded lazily: importing one stage does not import the others)."""

__all__ = ["CaptionerModule"]


def __getattr__(name: str):
    if name == "CaptionerModule":
        from videogen.modules.captioner import CaptionerModule

        return CaptionerModule
    raise AttributeError(f"module 'videogen.modules' has no attribute {name!r}")
