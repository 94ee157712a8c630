"""The errors videogen shows as one line (``videogen: error: ...``, exit status 2) with nothing computed.

Plain exceptions, importable without torch or Lightning: the command line (``videogen/cli.py``) catches
them, the code that finds the problem raises them.
"""


class ConfigError(ValueError):
    """A configuration the run cannot use (found before any compute)."""


class RefusedFile(Exception):
    """A file or folder videogen will not build, load or overwrite (a hostile or foreign export,
    checkpoint record or output folder). The commands show it as one line, ``videogen: error:
    <file>: ...``, with exit status 2; nothing has been built or written when it is raised."""
