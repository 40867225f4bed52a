"""``python -m bcd.transform NAME``: the process that runs one transform job.

Started detached by :class:`bcd.transform.TransformJobService`; SIGTERM makes
it stop after the chunk being scored (the job ends ``Stopped``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    """Run the job named in ``argv``; exit status 0 unless it failed."""
    from bcd.config import get_settings
    from bcd.transform import run_job

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bcd.transform TRANSFORM_JOB_NAME\n")
        return 2
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = run_job(args[0], settings, stop)
    return 1 if status == "Failed" else 0


if __name__ == "__main__":
    sys.exit(main())
