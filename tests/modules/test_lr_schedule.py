import math

import pytest

from videogen.modules.lr_schedule import warmup_cosine


def test_warmup_then_cosine_to_floor():
    f = lambda s: warmup_cosine(s, warmup=10, decay=110, floor=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)  # stays at the floor after decay
    assert all(f(s) >= f(s + 1) for s in range(10, 120))
    assert warmup_cosine(1000, warmup=10, decay=None, floor=0.1) == 1.0
    assert math.isclose(warmup_cosine(4, warmup=10, decay=None, floor=0.1), 0.5)
