"""One module per training subcommand, each with ``add_parser(subparsers)``."""
