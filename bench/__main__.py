"""Run every benchmark, one after the other: ``python -m bench`` (``--quick`` is passed on to each).

Each module listed here has ``main(argv)`` and accepts ``--quick``.
"""

from __future__ import annotations

import importlib
import sys

MODULES = [
    "bench.decide",
    "bench.background",
    "bench.threads",
    "bench.join",
    "bench.flood",
    "bench.takeover",
    "bench.learn",
    "bench.estimators",
    "bench.learning",
]


def main() -> None:
    for name in MODULES:
        importlib.import_module(name).main(sys.argv[1:])


if __name__ == "__main__":
    main()
