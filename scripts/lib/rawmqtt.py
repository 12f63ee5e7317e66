"""The least of an MQTT 3.1.1 publisher, for the benchmarks: CONNECT and QoS 0 PUBLISH packets
written by hand (MQTT 3.1.1 §3.1, §3.3), so that a load generator needs no client library and
spends its time on the messages, not on a client's bookkeeping."""
import socket
import struct


def remaining_length(n):
    """MQTT's variable-length 'remaining length' (§2.2.3)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect(port, client_id, host="127.0.0.1", keep_alive=60):
    """A clean-session connection; returns the socket once the broker's CONNACK is read."""
    s = socket.create_connection((host, port))
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", keep_alive) + struct.pack(">H", len(cid)) + cid
    s.sendall(b"\x10" + remaining_length(len(body)) + body)
    ack = s.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"the broker refused the connection: {ack!r}")
    return s


def publish0(topic, payload):
    """One QoS 0 PUBLISH packet (topic: str, payload: bytes)."""
    t = topic.encode()
    body = struct.pack(">H", len(t)) + t + payload
    return b"\x30" + remaining_length(len(body)) + body
