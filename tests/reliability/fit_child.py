"""`videogen ...` in a child process, with fault hooks chosen by environment variables:

* ``VG_SLOW_SAVE=NAME:MARKER``: the first ``torch.save`` into a file whose name contains NAME (after
  ``VG_SLOW_SAVE_SKIP`` such saves went through) writes half its bytes, creates MARKER and sleeps (the
  parent SIGKILLs it there: a kill in the middle of a save).
"""

import io
import os
import sys
import time
from pathlib import Path

import torch

slow = os.environ.get("VG_SLOW_SAVE")
if slow:
    name, marker = slow.split(":", 1)
    real_save = torch.save
    skip = [int(os.environ.get("VG_SLOW_SAVE_SKIP", "0"))]

    def slow_save(obj, f, *args, **kwargs):
        if isinstance(f, io.IOBase) and name in str(getattr(f, "name", "")) and skip[0] > 0:
            skip[0] -= 1
        elif isinstance(f, io.IOBase) and name in str(getattr(f, "name", "")):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            Path(marker).write_text(f"{len(data)}")
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    torch.save = slow_save

from videogen.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
