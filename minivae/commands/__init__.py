"""The ``minivae`` subcommands, one module each (``images`` holds two, sample and reconstruct), with the functions
``cli.COMMANDS`` names: ``add_arguments(parser)`` and ``run(args)`` unless it names others; ``cli`` loads only the
one asked for."""
