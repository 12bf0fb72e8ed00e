"""Build the embedded demo zoo (assets/zoo): `python scripts/build_zoo.py [--out DIR] [--check]`.

A thin wrapper over `python -m darwin_core zoo build`, for people who look in scripts/ first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from darwin_core.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["zoo", "build", *sys.argv[1:]]))
