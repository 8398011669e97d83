"""What every command shares: the settings, read once with errors named by variable, and
logging to stderr."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from streamrec.stream.settings import Settings


def load_settings() -> Settings:
    """The settings from STREAMREC_* variables; an invalid one stops the command with its name."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"STREAMREC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        msg = f"streamrec: invalid configuration: {problems}"
        raise SystemExit(msg) from None


def setup_logging(level: str) -> None:
    """Log records to stderr with time, level and logger."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
