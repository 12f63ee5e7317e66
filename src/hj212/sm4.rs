//! SM4 (GB/T 32907) for HJ 212-2025 encrypted data areas [S] (hj212-field.md §2.5): 16-byte key,
//! ECB, no padding; every full 16-byte group of the area between `CP=&&` and `&&` is encrypted, a
//! tail shorter than 16 stays plaintext. On the wire the ciphertext is text: `{0xE4,0x3E,...}`
//! (upper-case hex digits, `0x` prefix, `,` between bytes) followed by the plaintext tail.

use sm4::Sm4;
use sm4::cipher::generic_array::GenericArray;
use sm4::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// Encrypts every full 16-byte block of `data` in place (SM4-ECB); a shorter tail is left alone.
pub fn encrypt_blocks(key: &[u8; 16], data: &mut [u8]) {
    let c = Sm4::new(GenericArray::from_slice(key));
    for b in data.chunks_exact_mut(16) {
        c.encrypt_block(GenericArray::from_mut_slice(b));
    }
}

/// Decrypts every full 16-byte block of `data` in place; a shorter tail is left alone.
pub fn decrypt_blocks(key: &[u8; 16], data: &mut [u8]) {
    let c = Sm4::new(GenericArray::from_slice(key));
    for b in data.chunks_exact_mut(16) {
        c.decrypt_block(GenericArray::from_mut_slice(b));
    }
}

/// The wire text of an encrypted data area: `{0x..,..}` + plaintext tail. An area shorter than
/// one block is returned as it is (nothing to encrypt).
pub fn encrypt_area(key: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    let full = plain.len() / 16 * 16;
    if full == 0 {
        return plain.to_vec();
    }
    let mut blocks = plain[..full].to_vec();
    encrypt_blocks(key, &mut blocks);
    let mut out = Vec::with_capacity(full * 5 + 2 + plain.len() - full);
    out.push(b'{');
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("0x{b:02X}").as_bytes());
    }
    out.push(b'}');
    out.extend_from_slice(&plain[full..]);
    out
}

/// The plaintext of an area's wire text (`{0x..,..}` + tail); `None` when the text is not of that
/// form or the ciphertext is not a whole number of blocks. Hex digits of either case are accepted.
pub fn decrypt_area(key: &[u8; 16], wire: &[u8]) -> Option<Vec<u8>> {
    let rest = wire.strip_prefix(b"{")?;
    let close = rest.iter().position(|&c| c == b'}')?;
    let mut bytes = Vec::with_capacity(close / 5 + 1);
    for item in rest[..close].split(|&c| c == b',') {
        let item = item.trim_ascii();
        let hex = item
            .strip_prefix(b"0x")
            .or_else(|| item.strip_prefix(b"0X"))?;
        if hex.is_empty() || hex.len() > 2 {
            return None;
        }
        let mut v = 0u8;
        for &h in hex {
            v = (v << 4) | (h as char).to_digit(16)? as u8;
        }
        bytes.push(v);
    }
    if bytes.is_empty() || bytes.len() % 16 != 0 {
        return None;
    }
    decrypt_blocks(key, &mut bytes);
    bytes.extend_from_slice(&rest[close + 1..]);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn gbt_32907_check_vector() {
        let k: [u8; 16] = unhex("0123456789abcdeffedcba9876543210")
            .try_into()
            .expect("16");
        let mut d = k.to_vec();
        encrypt_blocks(&k, &mut d);
        assert_eq!(d, unhex("681edf34d206965e86b3e94f536e4246"));
        decrypt_blocks(&k, &mut d);
        assert_eq!(d, k.to_vec());
    }

    #[test]
    fn area_round_trip_and_tail() {
        let k = [0x30u8; 16];
        let plain = b"DataTime=20240520210600;a01011-Min=1.35,g=N";
        let w = encrypt_area(&k, plain);
        assert!(w.starts_with(b"{0x"));
        assert!(w.ends_with(&plain[32..]));
        assert_eq!(decrypt_area(&k, &w).expect("decrypts"), plain.to_vec());
        assert_eq!(encrypt_area(&k, b"short"), b"short".to_vec());
        assert_eq!(decrypt_area(&k, b"{0x1,0x2}"), None);
        assert_eq!(decrypt_area(&k, b"{}"), None);
        assert_eq!(decrypt_area(&k, b"{0xZZ}"), None);
    }
}
