"""The core's own CLI commands (see :mod:`klcontrol.cli`); other packages add theirs by entry point."""

#: Command name → module.
COMMANDS = {"simulate": "klcontrol.commands.simulate", "data": "klcontrol.commands.data"}
