//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven: the checksum of each
//! stored chunk. Small enough not to need a crate.

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32C over the parts, in order, as if they were one buffer.
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_matches_the_rfc3720_check_values() {
        assert_eq!(super::crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(super::crc32c(&[b"1234", b"56789"]), 0xE306_9283);
        assert_eq!(super::crc32c(&[&[0u8; 32]]), 0x8A91_36AA);
        assert_eq!(super::crc32c(&[]), 0);
    }
}
