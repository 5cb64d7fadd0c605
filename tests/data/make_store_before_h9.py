"""Make ``store-before-h9.db.gz``: a SQLite store in the layout of main before the join queue was
keyed by event time (migrations m001-m012 of one history), made by that code itself with
``make_store_before_h3.py``'s decisions, outcome and join (some decisions joined, some queued).
Run it against the code of main at 08016d9, not this one:

    cd /path/to/brein-at-08016d9
    PYTHONDONTWRITEBYTECODE=1 python /path/to/tests/data/make_store_before_h9.py /path/to/tests/data/store-before-h9.db.gz
"""

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

from make_store_before_h3 import make


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "brein.db"
        make(path)
        with path.open("rb") as raw, gzip.open(sys.argv[1], "wb") as packed:
            shutil.copyfileobj(raw, packed)


if __name__ == "__main__":
    main()
