#!/usr/bin/env python3
"""SUBACK latency of new filters, and route writes per second under churn, against one
broker address (a lone node, or one node of a cluster). Called by benches/cluster.sh.

    route_writes.py HOST:PORT LABEL [--latency N] [--churn CLIENTS FILTERS]

--latency N: one client subscribes to N new filters one at a time (each SUBSCRIBE waits
  for its SUBACK): the time from SUBSCRIBE sent to SUBACK read, p50/p99/max.
--churn C F: C clients each send F SUBSCRIBEs of new filters without waiting, then read
  the SUBACKs: new filters (route writes, in a cluster) per second, from the first
  SUBSCRIBE to the last SUBACK.

Plain MQTT 3.1.1 over raw sockets (no client library in the measured path). Prints one
JSON object. Bounded: every socket read times out after 30 s.
"""

import json
import socket
import statistics
import sys
import time
import uuid


def remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect(addr, client_id):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = string("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + string(client_id)
    sock.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
    ack = read_packet(sock)
    if ack[0] != 0x20 or ack[1][1] != 0:
        raise SystemExit(f"CONNACK refused: {ack}")
    return sock


def subscribe_packet(packet_id, topic_filter):
    body = packet_id.to_bytes(2, "big") + string(topic_filter) + bytes([1])
    return bytes([0x82]) + remaining_length(len(body)) + body


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the broker closed the connection")
            self.buf += chunk

    def packet(self):
        self._fill(2)
        length, mult, i = 0, 1, 1
        while True:
            self._fill(i + 1)
            byte = self.buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        self._fill(i + length)
        kind, body = self.buf[0], bytes(self.buf[i:i + length])
        del self.buf[:i + length]
        return kind, body


def read_packet(sock):
    return Reader(sock).packet()


def latency(addr, n, run):
    sock = connect(addr, f"lat-{run}")
    reader = Reader(sock)
    samples = []
    for i in range(n):
        packet_id = i % 65535 + 1
        start = time.perf_counter()
        sock.sendall(subscribe_packet(packet_id, f"bench/{run}/lat/{i}"))
        kind, body = reader.packet()
        samples.append(time.perf_counter() - start)
        if kind != 0x90 or body[2] >= 0x80:
            raise SystemExit(f"SUBACK refused: {kind:#x} {body}")
    sock.close()
    samples.sort()
    ms = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)
    return {"subscribes": n, "p50_ms": ms(0.50), "p99_ms": ms(0.99), "max_ms": round(samples[-1] * 1000, 3),
            "mean_ms": round(statistics.mean(samples) * 1000, 3)}


def churn(addr, clients, filters, run):
    socks = [connect(addr, f"churn-{run}-{c}") for c in range(clients)]
    start = time.perf_counter()
    for c, sock in enumerate(socks):
        sock.sendall(b"".join(subscribe_packet(i + 1, f"bench/{run}/churn/{c}/{i}") for i in range(filters)))
    for sock in socks:
        reader = Reader(sock)
        for _ in range(filters):
            kind, body = reader.packet()
            if kind != 0x90 or body[2] >= 0x80:
                raise SystemExit(f"SUBACK refused: {kind:#x} {body}")
    elapsed = time.perf_counter() - start
    for sock in socks:
        sock.close()
    total = clients * filters
    return {"new_filters": total, "seconds": round(elapsed, 3), "per_s": round(total / elapsed)}


def main():
    args = sys.argv[1:]
    addr, label = args[0], args[1]
    run = uuid.uuid4().hex[:8]
    out = {"label": label}
    if "--latency" in args:
        out["latency"] = latency(addr, int(args[args.index("--latency") + 1]), run)
    if "--churn" in args:
        i = args.index("--churn")
        out["churn"] = churn(addr, int(args[i + 1]), int(args[i + 2]), run)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
