"""``python -m sslfast train METHOD ...`` (also the ``sslfast`` console command)."""

from __future__ import annotations

import sys

USAGE = "usage: sslfast train METHOD [--data NAME] [options]   |   sslfast train --list"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("commands:\n  train   train a self-supervised method (sslfast train --help)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import main as train_main
        return train_main(rest)
    print(f"sslfast: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
