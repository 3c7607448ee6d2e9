"""``klcontrol`` subcommands owned by :mod:`klcontrol.analysis` (registered through the ``klcontrol.commands`` entry point).

Each module defines ``register(subparsers)``; its command parses arguments,
calls one library function and prints.
"""

#: Command name → module, found by :func:`klcontrol.cli.build_parser`.
COMMANDS = {
    "stability": "klcontrol.analysis.commands.stability",
    "fit": "klcontrol.analysis.commands.fit",
    "check": "klcontrol.analysis.commands.check",
    "tune": "klcontrol.analysis.commands.tune",
    "judge": "klcontrol.analysis.commands.judge",
}
