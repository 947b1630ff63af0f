"""Run inside a network namespace: create a known mix of flows, print 'ready', hold them.

UDP unreplied (closed ports), UDP replied (an echo server), TCP held ESTABLISHED,
TCP closed into TIME_WAIT, and ICMP echo.  Loopback only.  Exits when stdin closes.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

N_UDP_UNREPLIED, N_UDP_REPLIED, N_TCP_EST, N_TCP_TW, N_ICMP = 40, 7, 5, 3, 2


def icmp_echo(ident: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    csum = 0
    for i in range(0, len(header), 2):
        csum += (header[i] << 8) + header[i + 1]
    csum = (csum >> 16) + (csum & 0xFFFF)
    csum = ~(csum + (csum >> 16)) & 0xFFFF
    s.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, 1), ("127.0.0.1", 0))
    s.settimeout(2)
    s.recv(1024)
    s.close()


def main() -> None:
    held = []
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(N_UDP_UNREPLIED):
        u.sendto(b"x", ("127.0.0.2", 40000 + i))
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.3", 5353))
    for _ in range(N_UDP_REPLIED):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(b"q", ("127.0.0.3", 5353))
        data, addr = echo.recvfrom(100)
        echo.sendto(data, addr)
        c.recv(100)
        held.append(c)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.4", 5432))
    srv.listen(64)
    for _ in range(N_TCP_EST):
        c = socket.create_connection(("127.0.0.4", 5432))
        a, _ = srv.accept()
        c.sendall(b"hi")
        a.recv(10)
        held += [c, a]
    for _ in range(N_TCP_TW):
        c = socket.create_connection(("127.0.0.4", 5432))
        a, _ = srv.accept()
        c.close()
        a.close()
    for i in range(N_ICMP):
        icmp_echo(1000 + i)
    time.sleep(0.2)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
