"""CLI commands, one module each (see klcontrol.cli)."""
