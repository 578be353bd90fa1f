#!/usr/bin/env python3
"""What one small durable write costs on this disk: pwrite + fdatasync of a 300-byte record,
2 000 times, into a file that grows with each record and into one pre-filled with zeros (as
PostgreSQL pre-fills its WAL segments). The difference is what a growing log file pays for
its size change on every sync. Then the pre-filled case again with the CPU kept busy for a
while between one sync and the next (as a writer applying the next group is): on a virtual
machine a sync can take far longer after such a gap than back to back. Last, the 0.1 ms case
once more while a second process keeps another CPU busy: whether the slow syncs come from
the whole machine going idle during the sync (what the write path's polling avoids,
crates/ledger/src/poll.rs), and once more while a second process keeps one 512-byte O_DIRECT
read in flight instead: whether they come from the disk going idle between syncs (what the
log's reads between syncs avoid, crates/ledger/src/log/awake.rs).
Usage: scripts/fsync-probe.py DIR (a directory on the disk to measure; the probe file is left
there)."""
import multiprocessing, os, time, sys
d = sys.argv[1]
def run(path, prefill, n=2000, size=300, gap=0.0):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    if prefill:
        os.pwrite(fd, b"\0" * (n * size + 4096), 0); os.fsync(fd)
    buf = b"x" * size; t = time.perf_counter(); lat = []
    for i in range(n):
        end = time.perf_counter() + gap
        while time.perf_counter() < end:
            pass
        s = time.perf_counter(); os.pwrite(fd, buf, i * size); os.fdatasync(fd); lat.append(time.perf_counter() - s)
    os.close(fd); lat.sort()
    return n / (time.perf_counter() - t), lat[n // 2] * 1e3, lat[int(n * .9)] * 1e3, lat[int(n * .99)] * 1e3
path = os.path.join(d, "probe.wal")
for rnd in range(2):
    for prefill in (False, True):
        r = run(path, prefill)
        print(f"round {rnd} {'prefilled' if prefill else 'growing  '}: {r[0]:8.0f} syncs/s  p50 {r[1]:.3f} ms  p90 {r[2]:.3f} ms  p99 {r[3]:.3f} ms")
for rnd in range(2):
    for gap_ms in (0.0, 0.03, 0.1, 0.3):
        r = run(path, True, gap=gap_ms / 1e3)
        print(f"round {rnd} prefilled, busy {gap_ms:.2f} ms between syncs: p50 {r[1]:.3f} ms  p90 {r[2]:.3f} ms  p99 {r[3]:.3f} ms (sync alone)")
def spin(stop):
    while not stop.value:
        pass
def read(stop):
    import mmap
    block = os.path.join(d, "probe.block")
    with open(block, "wb") as f:
        f.write(b"\0" * 4096); f.flush(); os.fsync(f.fileno())
    fd = os.open(block, os.O_RDONLY | os.O_DIRECT); buf = mmap.mmap(-1, 4096)
    while not stop.value:
        os.preadv(fd, [memoryview(buf)[:512]], 0)
for rnd in range(2):
    for busy_other in (False, True, "reading"):
        stop = multiprocessing.Value("b", 0, lock=False)
        target = read if busy_other == "reading" else spin
        other = multiprocessing.Process(target=target, args=(stop,)) if busy_other else None
        if other:
            other.start()
        r = run(path, True, gap=0.1 / 1e3)
        if other:
            stop.value = 1
            other.join()
        other_is = {False: "other CPUs idle", True: "another CPU busy", "reading": "a read in flight"}[busy_other]
        print(f"round {rnd} prefilled, busy 0.10 ms between syncs, {other_is}: p50 {r[1]:.3f} ms  p90 {r[2]:.3f} ms  p99 {r[3]:.3f} ms")
