#!/usr/bin/env python3
"""An HJ 212 monitor (现场机) for dustgate's tests: plain sockets, its own codec.

Written from the standard's text (HJ 212-2017 §6.3 and Appendix A, as summarised in
shared/reference/domain.md §3), independently of dustgate's Rust codec, so that the two can
check each other.

Subcommands:

  frame  --mn MN --cn CN --cp CP [--qn QN] [--st ST] [--pw PW] [--flag F] [--crc hj212|modbus]
         [--lower] [--no-crlf]
      Prints one frame (`##` + length + segment + CRC + CR LF) on stdout, CR LF written as the
      four characters \\r\\n so that a frame is one line.

  send   --port P [--mode whole|bytes|cuts|garbage] [--seed S] [--wait SECONDS]
      Reads frames from stdin, one a line (`\\r\\n` written literally is turned into CR LF),
      sends them over one TCP connection to 127.0.0.1:P as the mode says, then reads what the
      gateway answers for SECONDS (default 2) after the last byte. Every answer is printed as
      a JSON line {"reply": ..., "crc_ok": ..., "qn": ..., "cn": ..., "st": ..., "flag": ...}.
        whole    each frame in one write
        bytes    one byte a write
        cuts     the whole stream cut at random places (seeded)
        garbage  random garbage (no '#') between and around the frames, cut at random places

  hub    --port P --stations N [--mn-prefix X] [--frames K] [--start EPOCH_S] [--value V]
         [--timeout S]
      N monitors at once (asyncio), each on its own connection with MN = X + a 6-digit
      number, each sending K CN=2011 frames that ask for an answer (Flag=5), one after the
      other, each waiting for its CN=9014. DataTime of frame k is START + k seconds (local
      time of the gateway's site, written in the zone given by TZ). Prints one JSON line:
      {"stations": N, "sent": ..., "acked": ..., "bad_acks": ..., "failed": ...}; with
      --acked-file, "MN DataTime" of each acknowledged frame, a line each.
"""

import argparse
import asyncio
import json
import random
import resource
import socket
import sys
import time


def crc_hj212(data: bytes) -> int:
    # Appendix A: register 0xFFFF; per byte, register = (register >> 8) XOR byte; then eight
    # shifts right, XOR 0xA001 whenever the bit shifted out is 1.
    reg = 0xFFFF
    for b in data:
        reg = (reg >> 8) ^ b
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


def crc_modbus(data: bytes) -> int:
    reg = 0xFFFF
    for b in data:
        reg ^= b
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


def build(segment: str, crc="hj212", lower=False, crlf=True) -> bytes:
    data = segment.encode("utf-8")
    value = crc_hj212(data) if crc == "hj212" else crc_modbus(data)
    text = "%04X" % value
    if lower:
        text = text.lower()
    out = b"##" + ("%04d" % len(data)).encode() + data + text.encode()
    return out + (b"\r\n" if crlf else b"")


def segment_of(mn, cn, cp, qn=None, st="39", pw="123456", flag="5"):
    parts = []
    if qn:
        parts.append("QN=" + qn)
    parts += ["ST=" + st, "CN=" + cn, "PW=" + pw, "MN=" + mn]
    if flag is not None and flag != "":
        parts.append("Flag=" + str(flag))
    return ";".join(parts) + ";CP=&&" + cp + "&&"


def parse_reply(frame: bytes):
    """A frame the gateway sent: its CRC checked here and its header fields."""
    out = {"reply": frame.decode("utf-8", "replace")}
    try:
        n = int(frame[2:6])
        seg = frame[6 : 6 + n]
        crc = frame[6 + n : 10 + n].decode()
        out["crc_ok"] = "%04X" % crc_hj212(seg) == crc.upper() and len(seg) == n
        head = seg.decode("utf-8").split("CP=&&", 1)[0]
        for item in head.split(";"):
            if "=" in item:
                k, v = item.split("=", 1)
                if k in ("QN", "CN", "ST", "MN", "Flag", "PW"):
                    out[k.lower()] = v
        out["cp"] = seg.decode("utf-8").split("CP=&&", 1)[1][:-2] if "CP=&&" in seg.decode("utf-8") else ""
    except (ValueError, IndexError, UnicodeDecodeError):
        out["crc_ok"] = False
    return out


def split_replies(buf: bytes):
    """Complete frames in buf (each ends with CR LF), and the rest."""
    frames = []
    while True:
        start = buf.find(b"##")
        if start < 0:
            return frames, b""
        end = buf.find(b"\r\n", start)
        if end < 0:
            return frames, buf[start:]
        frames.append(buf[start:end])
        buf = buf[end + 2 :]


def read_frames_stdin():
    frames = []
    for line in sys.stdin.read().splitlines():
        if not line.strip():
            continue
        frames.append(line.replace("\\r\\n", "\r\n").encode("utf-8"))
    return frames


def chunks_for(mode, frames, rng):
    if mode == "whole":
        return list(frames)
    stream = b"".join(frames)
    if mode == "bytes":
        return [stream[i : i + 1] for i in range(len(stream))]
    if mode == "garbage":
        alphabet = bytes(range(32, 127)).replace(b"#", b"") + b"\r\n\x00\xff"
        pieces = []
        for f in frames:
            pieces.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))
            pieces.append(f)
        pieces.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
        stream = b"".join(pieces)
    out = []
    i = 0
    while i < len(stream):
        n = rng.randint(1, 64)
        out.append(stream[i : i + n])
        i += n
    return out


def cmd_send(args):
    frames = read_frames_stdin()
    rng = random.Random(args.seed)
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for c in chunks_for(args.mode, frames, rng):
        sock.sendall(c)
        if args.mode != "whole":
            time.sleep(0.0005)
    sock.settimeout(0.2)
    buf = b""
    deadline = time.time() + args.wait
    while time.time() < deadline:
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        if not data:
            break
        buf += data
        done, buf = split_replies(buf)
        for f in done:
            print(json.dumps(parse_reply(f), ensure_ascii=False), flush=True)
    sock.close()


def cmd_frame(args):
    seg = segment_of(args.mn, args.cn, args.cp, qn=args.qn, st=args.st, pw=args.pw, flag=args.flag)
    frame = build(seg, crc=args.crc, lower=args.lower, crlf=not args.no_crlf)
    print(frame.decode("utf-8").replace("\r\n", "\\r\\n"))


async def one_station(i, args, tally):
    mn = "%s%06d" % (args.mn_prefix, i)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", args.port), args.timeout
        )
    except (OSError, asyncio.TimeoutError):
        tally["failed"] += 1
        return
    buf = b""
    try:
        for k in range(args.frames):
            t = time.localtime(args.start + k)
            dt = time.strftime("%Y%m%d%H%M%S", t)
            qn = dt + "%03d" % (i % 1000)
            cp = "DataTime=%s;a34002-Rtd=%s,a34002-Flag=N;a34004-Rtd=%s,a34004-Flag=N" % (
                dt,
                args.value,
                args.value / 2,
            )
            writer.write(build(segment_of(mn, "2011", cp, qn=qn)))
            await writer.drain()
            tally["sent"] += 1
            if args.interval_ms:
                await asyncio.sleep(args.interval_ms / 1000)
            got = False
            end = time.monotonic() + args.timeout
            while not got and time.monotonic() < end:
                data = await asyncio.wait_for(reader.read(4096), end - time.monotonic())
                if not data:
                    raise ConnectionError("closed")
                buf += data
                done, buf = split_replies(buf)
                for f in done:
                    r = parse_reply(f)
                    if r.get("crc_ok") and r.get("cn") == "9014" and r.get("qn") == qn and r.get("mn") == mn:
                        got = True
                    else:
                        tally["bad_acks"] += 1
            if got:
                tally["acked"] += 1
                if args.acked_file:
                    tally["acked_list"].append("%s %s" % (mn, dt))
            else:
                tally["failed"] += 1
                return
    except (OSError, ConnectionError, asyncio.TimeoutError):
        tally["failed"] += 1
    finally:
        writer.close()


async def hub(args):
    # One socket per monitor: raise the soft descriptor limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tally = {"stations": args.stations, "sent": 0, "acked": 0, "bad_acks": 0, "failed": 0, "acked_list": []}
    await asyncio.gather(*(one_station(i, args, tally) for i in range(args.stations)))
    acked = tally.pop("acked_list")
    if args.acked_file:
        with open(args.acked_file, "w") as f:
            f.write("\n".join(acked) + ("\n" if acked else ""))
    print(json.dumps(tally), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frame")
    f.add_argument("--mn", required=True)
    f.add_argument("--cn", required=True)
    f.add_argument("--cp", required=True)
    f.add_argument("--qn")
    f.add_argument("--st", default="39")
    f.add_argument("--pw", default="123456")
    f.add_argument("--flag", default="5")
    f.add_argument("--crc", default="hj212", choices=["hj212", "modbus"])
    f.add_argument("--lower", action="store_true")
    f.add_argument("--no-crlf", action="store_true")
    s = sub.add_parser("send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--mode", default="whole", choices=["whole", "bytes", "cuts", "garbage"])
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--wait", type=float, default=2.0)
    h = sub.add_parser("hub")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--stations", type=int, required=True)
    h.add_argument("--mn-prefix", default="HUB")
    h.add_argument("--frames", type=int, default=1)
    h.add_argument("--start", type=int, default=int(time.time()) - 3600)
    h.add_argument("--value", type=float, default=80.0)
    h.add_argument("--timeout", type=float, default=30.0)
    h.add_argument("--interval-ms", type=int, default=0)
    h.add_argument("--acked-file", help="write 'MN DataTime' of every acknowledged frame here")
    args = p.parse_args()
    if args.cmd == "frame":
        cmd_frame(args)
    elif args.cmd == "send":
        cmd_send(args)
    else:
        asyncio.run(hub(args))


if __name__ == "__main__":
    main()
