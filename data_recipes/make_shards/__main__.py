"""``python -m data_recipes.make_shards ...`` == ``videogen make-shards ...``."""

import sys

from videogen.cli import main

sys.exit(main(["make-shards", *sys.argv[1:]]))
