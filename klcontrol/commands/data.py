"""``klcontrol data``: list the reference data shipped inside the package, or print one file's path."""
from __future__ import annotations

import argparse

from ..cli import exit_codes_epilog


def register(sub) -> None:
    """Register the ``data`` command."""
    p = sub.add_parser(
        "data",
        help="list the traces and fits shipped with klcontrol, or print one's path",
        description="The reference traces and fits that the docs, the demo and the defaults use ship inside the "
        "package (klcontrol.data). Without arguments: every name. With `path NAME`: that file's path, for "
        "a command line such as klcontrol check --fit \"$(klcontrol data path identify/fit.json)\" --kp 0 --ki 0.1.",
        epilog=exit_codes_epilog(0, 1) + "\n\nexample:\n  klcontrol data path identify/fit.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("list", "path"), default="list",
                   help="list: every shipped name (default, or those under NAME); path: the path of NAME")
    p.add_argument("name", nargs="?", default="", help="a shipped name, e.g. identify/fit.json or cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    """Print names or a path; a name that is not shipped is an error naming the top-level names (exit 1)."""
    from .. import data

    if args.action == "path":
        if not args.name:
            raise ValueError("klcontrol data path needs a NAME, e.g. identify/fit.json (`klcontrol data` lists them)")
        print(data.path(args.name))
        return 0
    names = data.names(args.name)
    print("\n".join(names))
    return 0
