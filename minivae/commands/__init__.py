"""The ``minivae`` subcommands, one module each: ``add_arguments(parser)`` and ``run(args)``; ``cli`` loads only the one asked for."""
