"""What the examples share: their command line, and what a failed call means over HTTP."""
from __future__ import annotations

import argparse
import logging

from actors import CallExit, CallTimeout, NoProc

STATUS = {NoProc: 503, CallTimeout: 504, CallExit: 500}
"""The HTTP status for each way a call fails: no such process (it is restarting, or its
supervisor gave up), no reply in time, the server crashed while handling the call."""


def command_line(doc: str, port: int) -> argparse.Namespace:
    """`--data DIR [--host H] [--port P]`; also sends log records (crash reports from the
    "actors" logger, supervisor reports) to stderr."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", required=True, help="the LMDB store's directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port, help="0 picks a free port")
    logging.basicConfig(level=logging.WARNING)
    return parser.parse_args()
