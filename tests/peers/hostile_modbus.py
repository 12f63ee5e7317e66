#!/usr/bin/env python3
"""A hostile Modbus server for dustgate's tests: plain sockets, no pymodbus.

It answers FC03 (read holding registers) for any unit; every other function
code gets exception 1. Register `a` holds `value(a)` below, so a test knows
what every request should have read.

Usage:
    hostile_modbus.py --mode (extra|duplicate) --port PORT [--ready-file PATH]

Modes:
  extra      Modbus TCP (MBAP). Every third FC03 reply carries count + 2
             registers: the two registers *before* the requested start, then
             the requested ones. Byte count and MBAP length are correct for
             what is sent, so only a check against the request catches it.
  duplicate  RTU over TCP (RTU frames with CRC on a TCP socket). Every reply
             is sent, then sent again 3 ms later (a serial server that
             retransmits): the copy sits in the socket when the next request
             goes out.

Every request is counted on stdout ("request N unit U start S count C").
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

KNOWN = {0: 111, 300: 333}


def value(a):
    return KNOWN.get(a, 900 + (a % 100))


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class Counter:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


def fc03_pdu(start, count, extra):
    first = start - 2 if extra else start
    n = count + 2 if extra else count
    regs = [value(a) & 0xFFFF for a in range(first, first + n)]
    return bytes([3, 2 * n]) + b"".join(struct.pack(">H", r) for r in regs)


def serve_extra(conn, counter):
    while True:
        head = read_exact(conn, 7)
        if head is None:
            return
        tid, _proto, length, unit = struct.unpack(">HHHB", head)
        pdu = read_exact(conn, length - 1)
        if pdu is None:
            return
        n = counter.next()
        if pdu[0] == 3 and len(pdu) == 5:
            start, count = struct.unpack(">HH", pdu[1:5])
            print(f"request {n} unit {unit} start {start} count {count}", flush=True)
            reply = fc03_pdu(start, count, extra=(n % 3 == 0))
        else:
            reply = bytes([pdu[0] | 0x80, 1])
        conn.sendall(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)


def serve_duplicate(conn, counter):
    while True:
        head = read_exact(conn, 2)
        if head is None:
            return
        unit, fc = head[0], head[1]
        if fc == 3:
            rest = read_exact(conn, 6)
            if rest is None:
                return
            start, count = struct.unpack(">HH", rest[0:4])
            n = counter.next()
            print(f"request {n} unit {unit} start {start} count {count}", flush=True)
            body = bytes([unit]) + fc03_pdu(start, count, extra=False)
        else:
            # Not expected from the test's gateway: answer exception 1 and resync on silence.
            conn.settimeout(0.05)
            try:
                while conn.recv(256):
                    pass
            except OSError:
                pass
            conn.settimeout(None)
            body = bytes([unit, fc | 0x80, 1])
        frame = body + crc16(body)
        conn.sendall(frame)
        time.sleep(0.003)
        conn.sendall(frame)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["extra", "duplicate"], required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ready-file")
    args = p.parse_args()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": args.port, "mode": args.mode}, f)
        os.replace(tmp, args.ready_file)
    print(f"listening on 127.0.0.1:{args.port} mode {args.mode}", flush=True)
    counter = Counter()
    serve = serve_extra if args.mode == "extra" else serve_duplicate

    def handle(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            serve(conn, counter)
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
