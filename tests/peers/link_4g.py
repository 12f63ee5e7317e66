#!/usr/bin/env python3
"""A 4G-like link for dustgate's uplink tests: a TCP relay that delays every chunk and
sometimes stalls, as a mobile link does above TCP.

Written because this machine's kernel has no netem qdisc (`tc qdisc add ... netem` answers
"Specified qdisc kind is unknown"): loss and delay are made here, above TCP, where a lost
radio frame shows as TCP's retransmission stall; a blackout is made by the test by taking
the network namespace's link down (real packets dropped).

Usage:
    link_4g.py --listen HOST:PORT --to HOST:PORT [--delay S] [--stall-p P] [--stall S]
               [--seed N]

Each chunk read from one side is written to the other `--delay` seconds later (default 0.3,
one way); with probability `--stall-p` (default 0.03) a chunk waits `--stall` seconds more
(default 1.5), and so does everything behind it in that direction (order is kept, as in TCP).
Prints "listening PORT" when ready; each connection is relayed until either side closes.
"""

import argparse
import asyncio
import random
import sys
import time


async def pump(reader, writer, delay, stall_p, stall, rng):
    queue = asyncio.Queue()

    async def deliver():
        ready = 0.0
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            ready = max(ready, due)
            wait = ready - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                break
        try:
            writer.close()
        except OSError:
            pass

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            due = time.monotonic() + delay
            if rng.random() < stall_p:
                due += stall
            await queue.put((due, data))
    except (ConnectionError, OSError):
        pass
    await queue.put(None)
    await task


async def main_async(args):
    rng = random.Random(args.seed)
    to_host, to_port = args.to.rsplit(":", 1)

    async def handle(r1, w1):
        try:
            r2, w2 = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            w1.close()
            return
        await asyncio.gather(
            pump(r1, w2, args.delay, args.stall_p, args.stall, rng),
            pump(r2, w1, args.delay, args.stall_p, args.stall, rng),
        )

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print("listening %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--stall-p", type=float, default=0.03)
    ap.add_argument("--stall", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
