"""``python -m sslfast.bench [--quick] [--only FAMILY] [--device ...] [--out DIR]``;
``python -m sslfast.bench distributed ...``: the multi-process case (sslfast/bench/distributed.py)."""

import sys

from .harness import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["distributed"]:
        from .distributed import main as distributed_main
        sys.exit(distributed_main(sys.argv[2:]))
    sys.exit(main())
