//! The two CRCs seen on HJ 212 links, over the UTF-8 bytes of the data segment.
//!
//! - [`CrcForm::Hj212`]: the standard's Appendix A [P] (HJ 212-2017 p.19–20, unchanged in 2025 [S]):
//!   init 0xFFFF; per byte `crc = (crc >> 8) ^ byte`; then 8 times: take the lsb, shift right, xor
//!   0xA001 if the lsb was 1. Check value of `"123456789"`: 0x2F80. Not CRC-16/MODBUS.
//! - [`CrcForm::Modbus`]: CRC-16/MODBUS (`crc ^= byte`, same loop), used by some vendors [S]
//!   (hj212-field.md §1.3). Check value 0x4B37. Accepted only where configured.
//! - [`CrcForm::ModbusSwapped`]: the same CRC written low byte first, as a Modbus RTU wire
//!   carries it: vector X10 (`2154` where CRC-16/MODBUS is 0x5421) and lua-HJ212's
//!   `crc_serial_le.lua` [S]. Not in the brief's two forms; added so that X10 frames.

/// Which CRC a frame's four hex digits were checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrcForm {
    /// The standard's CRC (HJ 212 Appendix A) [P].
    Hj212,
    /// CRC-16/MODBUS over the segment, seen in the field [S].
    Modbus,
    /// CRC-16/MODBUS written low byte first (X10) [S].
    ModbusSwapped,
}

impl CrcForm {
    /// The CRC of `data` in this form.
    pub fn compute(self, data: &[u8]) -> u16 {
        match self {
            CrcForm::Hj212 => hj212(data),
            CrcForm::Modbus => modbus(data),
            CrcForm::ModbusSwapped => modbus(data).swap_bytes(),
        }
    }
}

/// `shift8` of every byte value: the eight shift/xor steps are linear, so for a 16-bit
/// register `shift8(x) = (x >> 8) ^ TABLE[x & 0xFF]`.
const TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = shift8(i as u16);
        i += 1;
    }
    t
};

const fn shift8(mut crc: u16) -> u16 {
    let mut i = 0;
    while i < 8 {
        let lsb = crc & 1;
        crc >>= 1;
        if lsb != 0 {
            crc ^= 0xA001;
        }
        i += 1;
    }
    crc
}

/// The high byte of `TABLE`: the HJ 212 CRC only ever carries `crc >> 8` from one byte to the
/// next (`crc = TABLE[(crc >> 8) ^ byte]`), so its state between bytes is that one byte, and
/// `H[x ^ y] = H[x] ^ H[y]` (the shift/xor steps are linear over GF(2)).
/// `SLICE[k][x]` is `H` applied `k + 1` times to `x`: eight bytes at once are then
/// `s' = SLICE[7][s ^ b0] ^ SLICE[6][b1] ^ .. ^ SLICE[0][b7]` (slicing-by-8), one dependent
/// look-up per eight bytes instead of per byte.
const SLICE: [[u8; 256]; 8] = {
    let mut t = [[0u8; 256]; 8];
    let mut x = 0;
    while x < 256 {
        t[0][x] = (TABLE[x] >> 8) as u8;
        x += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut x = 0;
        while x < 256 {
            t[k][x] = t[0][t[k - 1][x] as usize];
            x += 1;
        }
        k += 1;
    }
    t
};

/// The HJ 212 CRC (Appendix A) [P].
pub fn hj212(data: &[u8]) -> u16 {
    // Per byte: crc = TABLE[(crc >> 8) ^ byte]; all but the last byte only move the high byte.
    let Some((&last, body)) = data.split_last() else {
        return 0xFFFF;
    };
    let mut s: u8 = 0xFF;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        let h = |k: usize, b: u8| SLICE[k][usize::from(b)];
        s = h(7, s ^ c[0])
            ^ h(6, c[1])
            ^ h(5, c[2])
            ^ h(4, c[3])
            ^ h(3, c[4])
            ^ h(2, c[5])
            ^ h(1, c[6])
            ^ h(0, c[7]);
    }
    for &b in chunks.remainder() {
        s = SLICE[0][usize::from(s ^ b)];
    }
    TABLE[usize::from(s ^ last)]
}

/// CRC-16/MODBUS.
pub fn modbus(data: &[u8]) -> u16 {
    // shift8(crc ^ byte) = (crc >> 8) ^ TABLE[(crc ^ byte) & 0xFF].
    data.iter().fold(0xFFFF, |crc, &b| {
        (crc >> 8) ^ TABLE[usize::from(crc as u8 ^ b)]
    })
}

/// Four hex digits (either case) as a number; `None` for anything else.
pub fn parse_hex4(t: &[u8]) -> Option<u16> {
    if t.len() != 4 {
        return None;
    }
    let mut v: u16 = 0;
    for &c in t {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d as u16;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_equals_the_bitwise_loop() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let slow_hj = data
            .iter()
            .fold(0xFFFFu16, |c, &b| shift8((c >> 8) ^ u16::from(b)));
        let slow_mb = data
            .iter()
            .fold(0xFFFFu16, |c, &b| shift8(c ^ u16::from(b)));
        assert_eq!(hj212(&data), slow_hj);
        assert_eq!(modbus(&data), slow_mb);
    }

    #[test]
    fn sliced_equals_the_bitwise_loop_at_every_length_and_offset() {
        let data: Vec<u8> = (0..700u32).map(|i| (i * 131 + i / 7) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                let d = &data[start..end];
                let slow_hj = d
                    .iter()
                    .fold(0xFFFFu16, |c, &b| shift8((c >> 8) ^ u16::from(b)));
                let slow_mb = d.iter().fold(0xFFFFu16, |c, &b| shift8(c ^ u16::from(b)));
                assert_eq!(hj212(d), slow_hj, "{start}..{end}");
                assert_eq!(modbus(d), slow_mb, "{start}..{end}");
            }
        }
    }

    #[test]
    fn check_values() {
        assert_eq!(hj212(b"123456789"), 0x2F80);
        assert_eq!(modbus(b"123456789"), 0x4B37);
        assert_eq!(CrcForm::Hj212.compute(b"123456789"), 0x2F80);
    }

    #[test]
    fn appendix_a_vector() {
        // V1, HJ 212-2017 p.20 [P]; the printed sentence's 1C08 is an erratum, 1C80 is right.
        let seg = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
        assert_eq!(hj212(seg), 0x1C80);
    }

    #[test]
    fn hex4() {
        assert_eq!(parse_hex4(b"cc01"), Some(0xCC01));
        assert_eq!(parse_hex4(b"CC01"), Some(0xCC01));
        assert_eq!(parse_hex4(b"CC0"), None);
        assert_eq!(parse_hex4(b"CG01"), None);
        assert_eq!(parse_hex4(b"+C01"), None);
    }
}
