"""``python -m bcd.tuning drive NAME [--worker]``: the detached tuning driver process."""

from __future__ import annotations

import argparse
import logging
import sys

from bcd.config import get_settings
from bcd.errors import BcdError


def main(argv: list[str] | None = None) -> int:
    """Run a tuning job's driver (or an extra worker) until it leaves."""
    parser = argparse.ArgumentParser(prog="python -m bcd.tuning")
    commands = parser.add_subparsers(dest="command", required=True)
    drive_parser = commands.add_parser("drive", help="run a tuning job's driver")
    drive_parser.add_argument("name")
    drive_parser.add_argument("--worker", action="store_true", help="join as an extra worker")
    arguments = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from bcd._process import keep_caller_priority
    from bcd.tuning._driver import drive

    niceness = keep_caller_priority()
    if niceness:
        logging.getLogger("bcd.tuning").info("running at nice %d", niceness)

    try:
        status = drive(arguments.name, settings, primary=not arguments.worker)
    except BcdError as error:
        logging.getLogger("bcd.tuning").error("driver stopped: %s", error.message)
        return 1
    logging.getLogger("bcd.tuning").info("tuning job %s: %s", arguments.name, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
