#!/usr/bin/env python3
"""Print N distinct free TCP ports on 127.0.0.1, one per line.

usage: freeport.py [N]      (default N=1)

All sockets stay bound until every port is picked, so the N ports differ.
The usual race applies: another process may grab a port before we bind it.
"""

import socket
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
