#!/usr/bin/env python3
"""What one small durable write costs on this disk: pwrite + fdatasync of a 300-byte record,
2 000 times, into a file that grows with each record and into one pre-filled with zeros (as
PostgreSQL pre-fills its WAL segments). The difference is what a growing log file pays for
its size change on every sync. Usage: scripts/fsync-probe.py DIR (a directory on the disk
to measure; the probe file is left there)."""
import os, time, sys
d = sys.argv[1]
def run(path, prefill, n=2000, size=300):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    if prefill:
        os.pwrite(fd, b"\0" * (n * size + 4096), 0); os.fsync(fd)
    buf = b"x" * size; t = time.perf_counter(); lat = []
    for i in range(n):
        s = time.perf_counter(); os.pwrite(fd, buf, i * size); os.fdatasync(fd); lat.append(time.perf_counter() - s)
    os.close(fd); lat.sort()
    return n / (time.perf_counter() - t), lat[n // 2] * 1e3, lat[int(n * .99)] * 1e3
for rnd in range(2):
    for prefill in (False, True):
        r = run(os.path.join(d, "probe.wal"), prefill)
        print(f"round {rnd} {'prefilled' if prefill else 'growing  '}: {r[0]:8.0f} syncs/s  p50 {r[1]:.3f} ms  p99 {r[2]:.3f} ms")
