#!/usr/bin/env python3
"""An HJ 212 platform (上位机) for dustgate's uplink tests: plain sockets, its own parser.

Written from the standard's text (HJ 212-2017 §6.3, Table 3's field order, Appendix A's CRC,
as summarised in shared/reference/domain.md §3), independently of dustgate's Rust encoder, so
that the two check each other. Strict where a platform may be strict: the length must be the
segment's byte count, the CRC the standard's in upper case, the header keys in the standard's
order, every CP item `key=value`.

Subcommands:

  check  [--sm4-key HEX] [--sm4-length plaintext|transmitted]
      Reads frames from stdin, one a line (CR LF written as the four characters \\r\\n, or
      real), and prints one JSON verdict a frame (see `verdict`).

  serve  [--port P] [--withhold N] [--no-ack] [--log FILE] [--command CN:CP]...
      Listens on 127.0.0.1:P (--host H: on H) (0: a free port) and prints "listening PORT" when ready. Each
      frame received is written to FILE (default stdout) as a JSON verdict line with the
      arrival time ("t", seconds) and the connection's number ("conn", from 1). A valid frame whose Flag asks for an answer (bit 0) gets
      CN=9014 with its QN (ST=91, its PW and MN, Flag with its version bits), except the
      first N such frames (--withhold N: the sender must resend them) or all (--no-ack).
      After the first frame of a connection (its MN and PW are then known) each --command
      is sent once, 0.3 s apart, as a request: `QN=<ms>;ST=<its ST>;CN=<CN>;PW;MN;Flag=5;
      CP=&&<CP>&&`; each is logged as {"sent": CN, "qn": ...}.
"""

import argparse
import json
import socket
import sys
import threading
import time

from hj212_monitor import crc_hj212

# Table 3's header keys in their order (PNUM/PNO only when split, RF from 2025).
HEADER_ORDER = ["QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO", "RF"]


SM4 = {"key": None, "length": "plaintext"}


def sm4_decrypt_area(area: bytes) -> bytes:
    """HJ 212-2025 §6.4 / App. A.2 [S]: `{0xAB,...}` holds whole 16-byte SM4-ECB blocks, then
    the plaintext tail. Decrypted with OpenSSL's SM4 through `cryptography` (not dustgate's)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    if not area.startswith(b"{"):
        return area
    end = area.index(b"}")
    blocks = bytes(int(x, 16) for x in area[1:end].decode("ascii").split(","))
    d = Cipher(algorithms.SM4(SM4["key"]), modes.ECB()).decryptor()
    return d.update(blocks) + d.finalize() + area[end + 1:]


def verdict(frame: bytes):
    """What a strict platform sees in one frame: {"ok", "errors", header fields, "cp"
    (params), "factors" {code: {suffix: value}}}. With an SM4 key, an encrypted data area is
    decrypted first and "encrypted" is true; the length and CRC are checked on the plaintext
    or on what was sent, as --sm4-length says."""
    errors = []
    out = {"ok": False, "errors": errors}
    if frame.endswith(b"\r\n"):
        frame = frame[:-2]
    else:
        errors.append("no CR LF")
    if SM4["key"] and b"CP=&&{0x" in frame and frame.startswith(b"##") and len(frame) > 10:
        seg = frame[6:-4]
        i = seg.index(b"CP=&&") + 5
        try:
            plain = seg[:i] + sm4_decrypt_area(seg[i:-2]) + b"&&"
        except (ValueError, IndexError) as e:
            errors.append("SM4 area unreadable: %s" % e)
            return out
        out["encrypted"] = True
        if SM4["length"] == "transmitted":
            n = int(frame[2:6].decode("ascii"))
            if n != len(seg):
                errors.append("length %d but %d bytes were sent" % (n, len(seg)))
            if frame[-4:].decode("ascii", "replace") != "%04X" % crc_hj212(seg):
                errors.append("CRC of the sent segment wrong")
            frame = b"##%04d" % len(plain) + plain + b"%04X" % crc_hj212(plain)
        else:
            frame = frame[:2] + frame[2:6] + plain + frame[-4:]
    if not frame.startswith(b"##") or len(frame) < 10:
        errors.append("no ## header")
        return out
    try:
        n = int(frame[2:6].decode("ascii"))
    except ValueError:
        errors.append("length is not 4 digits")
        return out
    seg = frame[6:-4]
    crc = frame[-4:].decode("ascii", "replace")
    if len(seg) != n:
        errors.append("length %d but the segment has %d bytes" % (n, len(seg)))
    if n > 1024:
        errors.append("segment over 1024 bytes")
    if crc != "%04X" % crc_hj212(seg):
        errors.append("CRC %s, expected %04X" % (crc, crc_hj212(seg)))
    try:
        text = seg.decode("ascii")
    except UnicodeDecodeError:
        errors.append("not ASCII")
        return out
    head, sep, rest = text.partition("CP=&&")
    if not sep or not rest.endswith("&&"):
        errors.append("no CP=&&...&&")
        return out
    keys = []
    for item in head.split(";"):
        if not item:
            continue
        if "=" not in item:
            errors.append("header item without '=': %r" % item)
            continue
        k, v = item.split("=", 1)
        keys.append(k)
        out[k.lower()] = v
    known = [k for k in keys if k in HEADER_ORDER]
    if known != sorted(known, key=HEADER_ORDER.index):
        errors.append("header keys out of order: %s" % ";".join(keys))
    for k in ("QN", "ST", "CN", "PW", "MN", "Flag"):
        if k not in keys:
            errors.append("no " + k)
    cp = rest[:-2]
    params, factors = {}, {}
    for item in [i for i in cp.split(";") if i]:
        for part in item.split(","):
            if "=" not in part:
                errors.append("CP item without '=': %r" % part)
                continue
            k, v = part.split("=", 1)
            if "-" in k:
                code, suffix = k.split("-", 1)
                if suffix in factors.setdefault(code, {}):
                    errors.append("%s given twice" % k)
                factors[code][suffix] = v
            else:
                params[k] = v
    out["cp"] = params
    out["factors"] = factors
    if "DataTime" in params and (len(params["DataTime"]) != 14 or not params["DataTime"].isdigit()):
        errors.append("DataTime is not YYYYMMDDhhmmss")
    out["ok"] = not errors
    return out


def answer_9014(v):
    flag = int(v.get("flag", "4"))
    seg = "QN=%s;ST=91;CN=9014;PW=%s;MN=%s;Flag=%d;CP=&&&&" % (
        v["qn"], v.get("pw", ""), v.get("mn", ""), flag & ~3)
    data = seg.encode("ascii")
    return b"##%04d" % len(data) + data + b"%04X\r\n" % crc_hj212(data)


def split_frames(buf: bytes):
    frames = []
    while True:
        start = buf.find(b"##")
        if start < 0:
            return frames, b""
        end = buf.find(b"\r\n", start)
        if end < 0:
            return frames, buf[start:]
        frames.append(buf[start:end + 2])
        buf = buf[end + 2:]


def cmd_check(_args):
    for line in sys.stdin.read().splitlines():
        if line.strip():
            frame = line.replace("\\r\\n", "\r\n").encode("utf-8")
            print(json.dumps(verdict(frame)), flush=True)
    return 0


def cmd_serve(args):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(16)
    log = open(args.log, "a") if args.log else sys.stdout
    lock = threading.Lock()
    state = {"withheld": 0, "conns": 0}
    print("listening %d" % srv.getsockname()[1], flush=True)

    def send_commands(sock, slock, first):
        for i, spec in enumerate(args.command or []):
            cn, _, cp = spec.partition(":")
            qn = time.strftime("%Y%m%d%H%M%S") + "%03d" % (i % 1000)
            seg = "QN=%s;ST=%s;CN=%s;PW=%s;MN=%s;Flag=5;CP=&&%s&&" % (
                qn, first.get("st", ""), cn, first.get("pw", ""), first.get("mn", ""), cp)
            data = seg.encode("ascii")
            frame = b"##%04d" % len(data) + data + b"%04X\r\n" % crc_hj212(data)
            time.sleep(0.3)
            try:
                with slock:
                    sock.sendall(frame)
            except OSError:
                return
            with lock:
                log.write(json.dumps({"sent": cn, "qn": qn, "t": time.time()}) + "\n")
                log.flush()

    def conn(sock):
        buf = b""
        commanded = False
        with lock:
            state["conns"] += 1
            conn_no = state["conns"]
        slock = threading.Lock()  # a reply and a command never interleave on the socket
        with sock:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                frames, buf = split_frames(buf + data)
                for f in frames:
                    v = verdict(f)
                    v["t"] = time.time()
                    v["conn"] = conn_no
                    v["bytes"] = len(f)
                    reply = None
                    with lock:
                        wants = v["ok"] and int(v.get("flag", "0")) & 1
                        if wants and not args.no_ack:
                            if state["withheld"] < args.withhold:
                                state["withheld"] += 1
                                v["withheld"] = True
                            else:
                                reply = answer_9014(v)
                                v["acked"] = True
                                v["answer_bytes"] = len(reply)
                        log.write(json.dumps(v) + "\n")
                        log.flush()
                    if reply:
                        try:
                            with slock:
                                sock.sendall(reply)
                        except OSError:
                            return
                    if v["ok"] and not commanded and args.command:
                        commanded = True
                        threading.Thread(target=send_commands, args=(sock, slock, v), daemon=True).start()

    while True:
        s, _ = srv.accept()
        threading.Thread(target=conn, args=(s,), daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check")
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (a benchmark's namespace)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--withhold", type=int, default=0)
    s.add_argument("--no-ack", action="store_true")
    s.add_argument("--log")
    s.add_argument("--command", action="append", help="CN:CP, e.g. 1062:RtdInterval=120")
    for p in (s, sub.choices["check"]):
        p.add_argument("--sm4-key", help="32 hex digits: decrypt HJ 212-2025 data areas")
        p.add_argument("--sm4-length", default="plaintext", choices=["plaintext", "transmitted"])
    args = ap.parse_args()
    if getattr(args, "sm4_key", None):
        SM4["key"] = bytes.fromhex(args.sm4_key)
        SM4["length"] = args.sm4_length
    return {"check": cmd_check, "serve": cmd_serve}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
