"""``klcontrol`` subcommands owned by :mod:`vae_plant` (registered through the ``klcontrol.commands`` entry point).

Each module defines ``register(subparsers)``; its command parses arguments,
calls one library function and prints.
"""

#: Command name → module, found by :func:`klcontrol.cli.build_parser`.
COMMANDS = {
    "demo": "vae_plant.commands.demo",
    "train": "vae_plant.commands.train",
    "evaluate": "vae_plant.commands.evaluate",
    "compare": "vae_plant.commands.compare",
    "identify": "vae_plant.commands.identify",
    "verify-stability": "vae_plant.commands.verify_stability",
}
