"""Run one command and report its own wall time and resource use, as JSON on a given descriptor.

    python -m bench.launch FD COMMAND [ARGS...]

Why a launcher: the peak RSS the kernel reports for a child includes what the child held before
``exec``, and a child forked from the harness (which has torch loaded) would start out as large
as the harness. Spawned from this small process instead, the command's figures are its own.
The command inherits stdin, stdout and stderr, so the harness's pipes reach it directly.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    report_fd, argv = int(sys.argv[1]), sys.argv[2:]
    os.set_inheritable(report_fd, False)  # the command must not hold the report pipe open
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the harness's clock
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as exc:
        os.write(report_fd, json.dumps({"error": str(exc)}).encode())
        return 127
    _, status, usage = os.wait4(pid, 0)
    end = time.perf_counter()
    report = {
        "start": start,
        "wall_s": end - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
        "returncode": os.waitstatus_to_exitcode(status),
    }
    os.write(report_fd, json.dumps(report).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
