"""What the synthetic set's world is made of: each attribute of a clip and the values it takes.

One large coloured shape moving in a straight line over a dark background. The recipe that draws
the clips (``data_recipes/synthetic.py``), the pixel judge that reads them back
(:func:`videogen.evaluation.judge.judge_clip`) and the caption metrics
(:mod:`videogen.evaluation.caption_metrics`) share these names and numbers; changing one changes the
synthetic samples (bump ``data_recipes.synthetic.RECIPE_VERSION``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Saturated object colours, pairwise >= 170 apart in RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (45, 95, 245),
    "yellow": (245, 215, 40),
    "white": (240, 240, 240),
    "magenta": (215, 50, 215),
}


@dataclass(frozen=True)
class Background:
    rgb: tuple[int, int, int]
    clashes: tuple[str, ...]  # object colours of the same hue family, never drawn on this background


# Dark, muted backgrounds; their names share no word with COLOURS so captions stay unambiguous.
BACKGROUNDS: dict[str, Background] = {
    "charcoal": Background((38, 38, 42), ()),
    "slate": Background((58, 66, 80), ()),
    "navy": Background((20, 28, 70), ("blue",)),
    "forest": Background((22, 60, 32), ("green",)),
    "maroon": Background((75, 20, 28), ("red", "magenta")),
    "plum": Background((62, 28, 68), ("magenta", "blue")),
    "olive": Background((70, 68, 25), ("yellow", "green")),
    "brown": Background((72, 46, 26), ("red", "yellow")),
}
BACKGROUND_STYLES = ("solid", "gradient")

SHAPES = ("circle", "square", "triangle")
SHAPE_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # area / bounding-box area

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEEDS = {"slow": 0.3, "fast": 0.9}  # fraction of the free room along the motion axis crossed in the clip
SIZES = {"small": 0.12, "large": 0.22}  # object area / frame area
STILL = "none"  # direction and speed of a still image
