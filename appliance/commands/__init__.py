"""The ``appliance`` subcommands, one module each: ``add_parser(sub)`` adds the command's
parser to the CLI's subparsers, ``run(args)`` runs it and answers the exit status.

Each module imports what its command needs only when it runs, so that ``appliance keys``
does not load aiohttp or onnxruntime."""
