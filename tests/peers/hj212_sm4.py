#!/usr/bin/env python3
"""Independent SM4-ECB peer for tests/hj212_sm4.rs: OpenSSL's SM4 through the `cryptography`
package (not our code). Usage: hj212_sm4.py enc|dec KEYHEX DATAHEX; prints the result as hex.
Only whole 16-byte blocks are processed (no padding), as HJ 212-2025 §6.4.2 requires [S]."""
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("enc", "dec"):
        print(__doc__, file=sys.stderr)
        return 2
    key = bytes.fromhex(sys.argv[2])
    data = bytes.fromhex(sys.argv[3])
    if len(key) != 16 or len(data) % 16 != 0:
        print("key must be 16 bytes and data whole 16-byte blocks", file=sys.stderr)
        return 2
    c = Cipher(algorithms.SM4(key), modes.ECB())
    op = c.encryptor() if sys.argv[1] == "enc" else c.decryptor()
    print((op.update(data) + op.finalize()).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
