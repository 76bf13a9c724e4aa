"""Shared by the benchmark's Python side: peak memory of this process over
one step, read from /proc (Linux): VmHWM after resetting it with
clear_refs, as tests/bench/src/analytics/peak.rs does for the service."""

import json
import sys


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    """Resets VmHWM to VmRSS; False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_kib():
    return _status_kib("VmRSS")


def hwm_kib():
    return _status_kib("VmHWM")


def emit(result):
    """The one JSON line the benchmark reads, on stdout."""
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def log(message):
    print(message, file=sys.stderr, flush=True)
