"""The `wfkern` command line; subcommands live in `cmd_<name>.py` (each: add_parser(subparsers), run(args) -> int),
listed in `main.COMMANDS`."""
