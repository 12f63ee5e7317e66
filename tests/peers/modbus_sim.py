#!/usr/bin/env python3
"""Modbus device simulator for dustgate's integration tests.

The protocol side (TCP/MBAP and RTU framing, CRC, PDU decoding and encoding,
request handling) is pymodbus 3.16.1, which we did not write: the gateway is
tested against an independent Modbus implementation. Only the register tables
are ours, so that the tests control exactly what each address answers.

Usage:
    modbus_sim.py --regs FILE.json (--tcp PORT | --rtu-over-tcp PORT |
                  --rtu PTY_PATH --baud N) [--ready-file PATH] [--log-level L]

FILE.json:
    {"devices": [{"unit": 1,
                  "holding":  {"0": 123, "1": 65535},
                  "input":    {"0": 35},
                  "coils":    {"0": true},
                  "discrete": {"3": false}}],
     "silent": [7]}

Behaviour:
  * Addresses are 0-based protocol addresses. Registers are u16 ints
    (0..65535), bits are booleans. Every table is optional.
  * Reading (or writing) any address that is not listed answers Modbus
    exception 2 (illegal data address); a multi-address request fails when
    any one of its addresses is not listed.
  * Coils and holding registers are writable (FC05/FC06/FC15/FC16, also
    FC22/FC23 through pymodbus); writes are visible to later reads until the
    file is reloaded.
  * Units listed in "silent" never answer anything (a dead device on an
    RS-485 bus), on TCP, RTU over TCP and RTU alike: the server's trace_pdu
    hook returns None for their requests, and pymodbus' request handler then
    does not handle them at all (any function code). Behind that, the context
    raises NoSuchIdException for them and the server runs with
    ignore_missing_devices=True, which pymodbus also answers with silence.
  * A unit that is neither in "devices" nor in "silent" is treated the same:
    no answer (logged as "not simulated"). For comparison, pymodbus' own
    SimDevice datastore answers such units with exception 4 (after a KeyError
    traceback), and its legacy ModbusServerContext without
    ignore_missing_devices answers exception 0x0B.
  * The file's mtime (and inode/size) is polled every 100 ms; on a change the
    whole file is reloaded and replaces all tables. A file that fails to parse
    on reload is logged and the previous tables are kept.
  * When listening, the ready file (if given) is written with
    {"pid", "port", "mode", "reloads", "loaded": {"mtime_ns", "ino", "size"}}
    and READY is printed to stdout. The ready file is rewritten after each
    reload ("loaded" = signature of the file now served). With --tcp 0 or
    --rtu-over-tcp 0 the OS picks the port; "port" tells which.
  * Binds 127.0.0.1 only. Logs go to stderr. SIGTERM/SIGINT exit cleanly (0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from pymodbus import FramerType, __version__ as PYMODBUS_VERSION
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

LOG = logging.getLogger("modbus_sim")

TABLES = ("coils", "discrete", "holding", "input")
BIT_TABLES = ("coils", "discrete")
WRITABLE = ("coils", "holding")

# Function code -> table, as the Modbus data model defines it.
FC_TABLE = {
    1: "coils",
    5: "coils",
    15: "coils",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}

POLL_SECONDS = 0.1


class SpecError(ValueError):
    """The regs file does not follow the documented format."""


def parse_spec(text: str) -> tuple[dict[int, dict[str, dict[int, object]]], set[int]]:
    """Parse and validate a regs JSON document.

    Returns ({unit: {table: {address: value}}}, silent_units).
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError("top level must be an object")
    unknown = set(doc) - {"devices", "silent"}
    if unknown:
        raise SpecError(f"unknown top-level keys: {sorted(unknown)}")

    silent_raw = doc.get("silent", [])
    if not isinstance(silent_raw, list):
        raise SpecError('"silent" must be a list of unit ids')
    silent: set[int] = set()
    for unit in silent_raw:
        if not _is_int(unit) or not 0 <= unit <= 255:
            raise SpecError(f"silent unit {unit!r} is not an int in 0..255")
        silent.add(unit)

    devices_raw = doc.get("devices", [])
    if not isinstance(devices_raw, list):
        raise SpecError('"devices" must be a list')
    devices: dict[int, dict[str, dict[int, object]]] = {}
    for index, dev in enumerate(devices_raw):
        where = f"devices[{index}]"
        if not isinstance(dev, dict):
            raise SpecError(f"{where} must be an object")
        unknown = set(dev) - {"unit", *TABLES}
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        unit = dev.get("unit")
        if not _is_int(unit) or not 0 <= unit <= 255:
            raise SpecError(f"{where}.unit {unit!r} is not an int in 0..255")
        if unit in devices:
            raise SpecError(f"{where}: unit {unit} listed twice")
        if unit in silent:
            raise SpecError(f"{where}: unit {unit} is also listed in silent")
        tables: dict[str, dict[int, object]] = {}
        for table in TABLES:
            raw = dev.get(table, {})
            if not isinstance(raw, dict):
                raise SpecError(f"{where}.{table} must be an object")
            cells: dict[int, object] = {}
            for key, value in raw.items():
                try:
                    addr = int(key, 10)
                except ValueError as exc:
                    raise SpecError(
                        f"{where}.{table}: address {key!r} is not an integer"
                    ) from exc
                if not 0 <= addr <= 65535:
                    raise SpecError(f"{where}.{table}: address {addr} out of 0..65535")
                if table in BIT_TABLES:
                    if not isinstance(value, bool):
                        raise SpecError(
                            f"{where}.{table}[{addr}]: {value!r} is not a boolean"
                        )
                elif not _is_int(value) or not 0 <= value <= 65535:
                    raise SpecError(
                        f"{where}.{table}[{addr}]: {value!r} is not a u16 int"
                    )
                cells[addr] = value
            tables[table] = cells
        devices[unit] = tables
    return devices, silent


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JsonTablesContext(ModbusServerContext):
    """Server context that serves the tables of the regs file.

    ModbusBaseServer passes a ModbusServerContext with `old_simulator` set and
    no `simdevices` straight through to its request handler, which calls
    async_getValues/async_setValues/device_ids. The parent's __init__ is not
    called on purpose: it would wrap device contexts into pymodbus' SimDevice
    model, which cannot express holes in bit tables nor silent units.
    """

    def __init__(self, devices, silent):  # pylint: disable=super-init-not-called
        self.old_simulator = True
        self.simdevices = []
        self.devices = devices
        self.silent = silent

    def replace(self, devices, silent) -> None:
        self.devices = devices
        self.silent = silent

    def drop_unanswered(self, sending: bool, pdu):
        """pymodbus trace_pdu hook: drop requests for units that must not answer.

        The server's request handler only handles a received PDU when this hook
        returns it, so returning None means no reply at all, for any function
        code (also those that never touch the context, such as FC08/FC17).
        """
        if sending or pdu is None:
            return pdu
        unit = pdu.dev_id
        if unit in self.devices:
            return pdu
        why = "silent" if unit in self.silent else "not simulated"
        LOG.info("unit %d is %s: fc %d dropped, no answer", unit, why, pdu.function_code)
        return None

    def _device(self, device_id: int) -> dict[str, dict[int, object]]:
        if device_id in self.silent:
            LOG.debug("unit %d is silent: no answer", device_id)
            raise NoSuchIdException(f"unit {device_id} is silent")
        dev = self.devices.get(device_id)
        if dev is None:
            LOG.info("unit %d is not simulated: no answer", device_id)
            raise NoSuchIdException(f"unit {device_id} is not simulated")
        return dev

    async def async_getValues(self, device_id, func_code, address, count=1):
        dev = self._device(device_id)
        table = FC_TABLE.get(func_code)
        if table is None:
            LOG.info("unit %d fc %d: not a table function", device_id, func_code)
            return ExcCodes.ILLEGAL_FUNCTION
        cells = dev[table]
        addrs = range(address, address + count)
        missing = [a for a in addrs if a not in cells]
        if missing:
            LOG.debug(
                "unit %d fc %d read %s[%d..+%d]: not listed %s -> exception 2",
                device_id, func_code, table, address, count, missing[:8],
            )
            return ExcCodes.ILLEGAL_ADDRESS
        values = [cells[a] for a in addrs]
        LOG.debug(
            "unit %d fc %d read %s[%d..+%d] = %s",
            device_id, func_code, table, address, count, values,
        )
        return values

    async def async_setValues(self, device_id, func_code, address, values):
        dev = self._device(device_id)
        table = FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if table not in WRITABLE:
            return ExcCodes.ILLEGAL_ADDRESS
        if not isinstance(values, (list, tuple)):
            values = [values]
        cells = dev[table]
        addrs = range(address, address + len(values))
        if any(a not in cells for a in addrs):
            LOG.debug(
                "unit %d fc %d write %s[%d..+%d]: not listed -> exception 2",
                device_id, func_code, table, address, len(values),
            )
            return ExcCodes.ILLEGAL_ADDRESS
        for addr, value in zip(addrs, values):
            cells[addr] = bool(value) if table in BIT_TABLES else int(value)
        LOG.info(
            "unit %d fc %d wrote %s[%d..+%d] = %s",
            device_id, func_code, table, address, len(values), list(values),
        )
        return None

    def device_ids(self):
        return list(self.devices)


def file_signature(path: str):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class ReadyFile:
    """The --ready-file: rewritten (atomically) at start and after each reload.

    Content: {"pid", "port", "mode", "reloads",
              "loaded": {"mtime_ns", "ino", "size"}} where "loaded" is the
    signature of the regs file whose tables are being served, so a test can
    wait until an update it wrote is live.
    """

    def __init__(self, path: str | None, port: int | None, mode: str):
        self.path = path
        self.info = {"pid": os.getpid(), "port": port, "mode": mode, "reloads": 0}

    def write(self, signature, reloads: int) -> None:
        if not self.path:
            return
        mtime_ns, ino, size = signature
        self.info["reloads"] = reloads
        self.info["loaded"] = {"mtime_ns": mtime_ns, "ino": ino, "size": size}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.info, handle)
        os.replace(tmp, self.path)


def read_spec(path: str):
    with open(path, encoding="utf-8") as handle:
        return parse_spec(handle.read())


async def watch_file(
    path: str, context: JsonTablesContext, signature, ready: ReadyFile
) -> None:
    """Reload the regs file whenever its mtime/inode/size changes."""
    reloads = 0
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            current = file_signature(path)
        except OSError as exc:
            LOG.warning("cannot stat %s: %s (keeping current tables)", path, exc)
            continue
        if current == signature:
            continue
        signature = current
        try:
            devices, silent = read_spec(path)
        except (OSError, SpecError) as exc:
            LOG.error("reload of %s failed: %s (keeping current tables)", path, exc)
            continue
        context.replace(devices, silent)
        reloads += 1
        ready.write(signature, reloads)
        LOG.info(
            "reloaded %s: units %s, silent %s", path, sorted(devices), sorted(silent)
        )


def build_server(args, context: JsonTablesContext):
    # Second line of defence behind drop_unanswered: a NoSuchIdException from
    # the context is dropped without reply when ignore_missing_devices is set.
    common = {
        "ignore_missing_devices": True,
        "trace_pdu": context.drop_unanswered,
    }
    if args.tcp is not None:
        return ModbusTcpServer(
            context, framer=FramerType.SOCKET, address=("127.0.0.1", args.tcp), **common
        )
    if args.rtu_over_tcp is not None:
        return ModbusTcpServer(
            context,
            framer=FramerType.RTU,
            address=("127.0.0.1", args.rtu_over_tcp),
            **common,
        )
    return ModbusSerialServer(
        context,
        framer=FramerType.RTU,
        port=args.rtu,
        baudrate=args.baud,
        reconnect_delay=0.2,
        **common,
    )


def bound_port(server) -> int | None:
    sockets = getattr(server.transport, "sockets", None)
    if not sockets:
        return None
    return sockets[0].getsockname()[1]


async def run(args) -> int:
    regs_path = os.path.abspath(args.regs)
    signature = file_signature(regs_path)
    try:
        devices, silent = read_spec(regs_path)
    except SpecError as exc:
        LOG.error("%s: %s", regs_path, exc)
        return 2
    context = JsonTablesContext(devices, silent)
    server = build_server(args, context)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        LOG.error("cannot listen: %s", exc)
        return 1
    port = bound_port(server)
    where = args.rtu if args.rtu is not None else f"127.0.0.1:{port}"
    mode = "tcp" if args.tcp is not None else (
        "rtu-over-tcp" if args.rtu_over_tcp is not None else "rtu"
    )
    LOG.info(
        "pymodbus %s listening (%s) on %s: units %s, silent %s",
        PYMODBUS_VERSION, mode, where, sorted(devices), sorted(silent),
    )
    ready = ReadyFile(args.ready_file, port, mode)
    ready.write(signature, 0)
    print("READY", flush=True)
    watcher = asyncio.create_task(watch_file(regs_path, context, signature, ready))

    await stop.wait()
    LOG.info("signal received, shutting down")
    watcher.cancel()
    await server.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--regs", required=True, help="regs JSON file")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tcp", type=int, metavar="PORT", help="Modbus TCP (MBAP)")
    mode.add_argument(
        "--rtu-over-tcp", type=int, metavar="PORT", help="RTU frames over TCP"
    )
    mode.add_argument("--rtu", metavar="PTY_PATH", help="RTU on a serial device/pty")
    parser.add_argument("--baud", type=int, help="baud rate (with --rtu)")
    parser.add_argument("--ready-file", help="written once listening")
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG logs every request (default INFO)"
    )
    args = parser.parse_args()
    if args.rtu is not None and args.baud is None:
        parser.error("--rtu needs --baud")
    if args.rtu is None and args.baud is not None:
        parser.error("--baud is only for --rtu")
    for port in (args.tcp, args.rtu_over_tcp):
        if port is not None and not 0 <= port <= 65535:
            parser.error(f"port {port} out of range")

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pymodbus logs every bad frame/unknown-id at ERROR/DEBUG through "pymodbus".
    logging.getLogger("pymodbus").setLevel(args.log_level.upper())
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
