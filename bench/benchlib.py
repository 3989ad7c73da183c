"""Pieces every benchmark script uses: free loopback ports, /proc readings (CPU seconds, peak
memory) and a cleanup stack that stops servers also after an exception or Ctrl-C."""
import os
import socket
import sys

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def proc_status(pid):
    """VmRSS and VmHWM in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    return out


def system_cpu():
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK


def proc_cpu(pid, children=False):
    """utime + stime of a process (all its threads), in seconds. With children=True, plus the
    CPU of its children that have exited and been waited for (cutime + cstime): a PostgreSQL
    postmaster's finished backends, an archiver's archive_command runs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def proc_children(pid):
    """Pids of the direct children of `pid` that are alive now."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


class Cleanup:
    """Callbacks run in reverse order at the end, also after an exception or Ctrl-C."""

    def __init__(self):
        self.stack = []

    def push(self, what, fn):
        self.stack.append((what, fn))

    def pop(self):
        """Run the most recent callback now."""
        what, fn = self.stack.pop()
        fn()

    def run(self):
        while self.stack:
            what, fn = self.stack.pop()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - keep cleaning up
                print(f"cleanup of {what} failed: {e!r}", file=sys.stderr)
