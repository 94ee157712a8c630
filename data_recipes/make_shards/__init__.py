"""Real videos and images in a folder -> WebDataset shards + ``dataset.json`` (``videogen make-shards``).

Three steps, each over ``workers`` processes:

1. **probe**: every file under ``src`` is listed; media (by extension) is probed with
   ``videogen.data.decode`` and its first frame decoded, so corrupt files are caught here.
2. **plan**: captions are attached (sidecar ``name.txt`` or a jsonl/csv captions file), the filters
   applied, long videos cut into clips (frame ranges), keys assigned and samples packed into shards
   of about ``shard_size_mb`` in sorted order. The plan depends only on the inputs and the arguments,
   never on ``workers``, and is saved as ``OUT/.make-shards/plan.json``.
3. **write**: each shard is written atomically (``TarShardWriter``); when it is on disk a
   ``.make-shards/shard-NNNNNN.done.json`` records its statistics. A rerun with the same arguments
   keeps every shard that has both and writes the rest; other arguments into the same folder are
   refused.

Original bytes are stored as they are; only clips are re-encoded (H.264 mp4, frame-accurate,
video only). Nothing here aborts on a bad input file: it is skipped and listed with its reason.

* ``plan.py``   steps 1 and 2: listing, captions, probing, the plan
* ``write.py``  step 3: one shard and its done record
* ``run.py``    the driver (processes, resume, manifest, report)
"""

from data_recipes.make_shards.plan import MakeShardsError
from data_recipes.make_shards.run import make_shards

__all__ = ["MakeShardsError", "make_shards"]
