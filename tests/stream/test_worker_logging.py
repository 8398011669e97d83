"""The worker's log level holds for the libraries under it, not only for its own output."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from streamrec.stream.worker.service import make_worker


@pytest.fixture
def restored_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", ["WARNING", "ERROR", "INFO"])
def test_no_debug_records_are_built_above_debug(level, restored_root_logger, tmp_path):
    app = faust.App("logging-test", autodiscover=False, web_enabled=False, datadir=str(tmp_path))
    worker = make_worker(app, level)
    worker._setup_logging()  # noqa: SLF001 - what execute_from_commandline runs first

    assert restored_root_logger.level == getattr(logging, level)
    for library in ("aiokafka", "faust", "mode"):
        assert not logging.getLogger(library).isEnabledFor(logging.DEBUG)
