"""``python -m streamrec``: the same command line as ``streamrec``."""

from __future__ import annotations

from streamrec.stream.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
