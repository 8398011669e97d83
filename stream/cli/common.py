"""What every command shares: the settings, read once with errors named by variable and
unknown ``STREAMREC_*`` variables warned about, and logging to stderr."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from streamrec.stream.settings import Settings, warn_unknown_variables


def load_settings() -> Settings:
    """The settings from STREAMREC_* variables; an invalid one stops the command with its name.

    A STREAMREC_* variable that is no setting (a misspelling) is logged as a warning with
    the closest setting's name; logging is set up at ``STREAMREC_LOG_LEVEL`` first unless
    the command already did.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"STREAMREC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        msg = f"streamrec: invalid configuration: {problems}"
        raise SystemExit(msg) from None
    setup_logging(settings.log_level)  # a no-op where the command set it up already
    warn_unknown_variables()
    return settings


def setup_logging(level: str) -> None:
    """Log records to stderr with time, level and logger."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
