#!/usr/bin/env python3
"""How fast one worker goes through REQUEUE after REQUEUE: puts 100 tasks in queue `rq`,
subscribes, and answers each MSG with REQUEUE (plus DELAY_MS if given) until N MSGs came;
prints the cycles per second and the time from a REQUEUE sent to the next MSG.
Start tortoised with --max-deliveries 0 (the tasks come back again and again):
    python3 Benchmarks/requeue-cycle.py PORT N [DELAY_MS]"""
import socket
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
delay = (b" " + sys.argv[3].encode()) if len(sys.argv) > 3 else b""


def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")


producer, replies = connect()
for _ in range(100):
    producer.sendall(b"PUT rq 5\r\nhello\r\n")
    assert replies.readline().startswith(b"OK")
worker, frames = connect()
worker.sendall(b"SUB rq\r\n")
gaps, sent, got = [], None, 0
start = time.perf_counter()
while got < n:
    line = frames.readline()
    if not line.startswith(b"MSG"):
        continue  # OK to SUB and to each REQUEUE
    words = line.split()
    frames.read(int(words[4]) + 2)
    if sent is not None:
        gaps.append(time.perf_counter() - sent)
    got += 1
    sent = time.perf_counter()
    worker.sendall(b"REQUEUE " + words[1] + delay + b"\r\n")
elapsed = time.perf_counter() - start
gaps.sort()
print(f"{n / elapsed:.0f} requeue cycles/s; REQUEUE sent -> next MSG "
      f"p50 {gaps[len(gaps) // 2] * 1e6:.0f} us, p99 {gaps[int(len(gaps) * 0.99)] * 1e6:.0f} us")
