"""``klcontrol`` subcommands owned by :mod:`klcontrol.vae_plant` (registered through the ``klcontrol.commands`` entry point).

Each module defines ``register(subparsers)``; its command parses arguments,
calls one library function and prints.
"""

#: Command name → module, found by :func:`klcontrol.cli.build_parser`.
COMMANDS = {
    "demo": "klcontrol.vae_plant.commands.demo",
    "train": "klcontrol.vae_plant.commands.train",
    "evaluate": "klcontrol.vae_plant.commands.evaluate",
    "compare": "klcontrol.vae_plant.commands.compare",
    "identify": "klcontrol.vae_plant.commands.identify",
    "verify-stability": "klcontrol.vae_plant.commands.verify_stability",
}
