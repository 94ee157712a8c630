"""The extra `videogen` subcommands, one file each. Each module defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``."""
