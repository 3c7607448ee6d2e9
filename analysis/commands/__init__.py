"""``klcontrol`` subcommands owned by :mod:`analysis` (registered through the ``klcontrol.commands`` entry point).

Each module defines ``register(subparsers)``; its command parses arguments,
calls one library function and prints.
"""

#: Command name → module, found by :func:`klcontrol.cli.build_parser`.
COMMANDS = {
    "stability": "analysis.commands.stability",
    "fit": "analysis.commands.fit",
    "check": "analysis.commands.check",
    "tune": "analysis.commands.tune",
}
