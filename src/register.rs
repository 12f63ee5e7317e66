//! Register tables, value types and byte orders, the span a value occupies and the read limits
//! of a device, and the decoding of raw words into values.
//!
//! Shared by the configuration (profiles name tables, types and orders; devices carry limits)
//! and the Modbus source (planner, decoders), so neither depends on the other for them.
//!
//! Pure functions: no I/O. Decoding is on the hot path of every poll, so it works on the words
//! in place without allocating.

use std::fmt;
use std::str::FromStr;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Table {
    /// Coils and discrete inputs hold single bits; the others 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The read function code.
    pub fn read_function(self) -> u8 {
        match self {
            Table::Coil => 1,
            Table::Discrete => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }

    /// The protocol's limit on one read: 2000 bits or 125 registers.
    pub fn protocol_max_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            "holding" => Table::Holding,
            "input" => Table::Input,
            _ => {
                return Err(format!(
                    "unknown table \"{s}\": expected holding, input, coil or discrete"
                ));
            }
        })
    }
}

/// How the raw words of a register are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
}

impl ValueType {
    pub const ALL: [ValueType; 9] = [
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::U64,
        ValueType::I64,
        ValueType::F32,
        ValueType::F64,
        ValueType::Bool,
    ];

    /// Number of 16-bit registers (or bits, for bool in a bit table) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 | ValueType::Bool => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
            ValueType::Bool => "bool",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ValueType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown type \"{s}\": expected u16, i16, u32, i32, u64, i64, f32, f64 or bool"
                )
            })
    }
}

/// Byte order of a multi-byte value as it appears on the wire, naming the bytes of the
/// big-endian value A (most significant) to D. For 64-bit values the pattern extends:
/// `CDAB` swaps the order of the words, `BADC` swaps the bytes inside each word, `DCBA` does
/// both (fully little-endian). On 16-bit values, `BADC` and `DCBA` swap the two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::Abcd,
        ByteOrder::Cdab,
        ByteOrder::Badc,
        ByteOrder::Dcba,
    ];

    fn word_swap(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }

    fn byte_swap(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }

    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Abcd => "ABCD",
            ByteOrder::Cdab => "CDAB",
            ByteOrder::Badc => "BADC",
            ByteOrder::Dcba => "DCBA",
        }
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ByteOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ByteOrder::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("unknown byte order \"{s}\": expected ABCD, CDAB, BADC or DCBA"))
    }
}

/// Joins the words of a value into one big-endian integer, undoing the byte order.
/// `words.len()` is the value's width (1, 2 or 4).
fn assemble(words: &[u16], order: ByteOrder) -> u64 {
    let n = words.len();
    let mut acc: u64 = 0;
    for i in 0..n {
        let w = if order.word_swap() {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let w = if order.byte_swap() { w.swap_bytes() } else { w };
        acc = (acc << 16) | u64::from(w);
    }
    acc
}

/// Decodes the raw words of one register value (before scale and offset).
///
/// `words` must hold at least `ty.width()` words; for a bool, `bit` selects one bit of the
/// word (otherwise any non-zero word is true).
pub fn decode(words: &[u16], ty: ValueType, order: ByteOrder, bit: Option<u8>) -> f64 {
    let width = usize::from(ty.width());
    let Some(words) = words.get(..width) else {
        return f64::NAN;
    };
    let raw = assemble(words, order);
    match ty {
        ValueType::U16 => f64::from(raw as u16),
        ValueType::I16 => f64::from(raw as u16 as i16),
        ValueType::U32 => f64::from(raw as u32),
        ValueType::I32 => f64::from(raw as u32 as i32),
        ValueType::U64 => raw as f64,
        ValueType::I64 => raw as i64 as f64,
        ValueType::F32 => f64::from(f32::from_bits(raw as u32)),
        ValueType::F64 => f64::from_bits(raw),
        ValueType::Bool => {
            let set = match bit {
                Some(b) => (raw >> b) & 1 == 1,
                None => raw != 0,
            };
            if set { 1.0 } else { 0.0 }
        }
    }
}

/// Encodes a value into registers in the given order: the inverse of [`decode`]. Used by the
/// simulators of `dustgate demo` and by tests.
pub fn encode(value: f64, ty: ValueType, order: ByteOrder) -> Vec<u16> {
    let raw: u64 = match ty {
        ValueType::U16 => u64::from(value as u16),
        ValueType::I16 => u64::from(value as i16 as u16),
        ValueType::U32 => u64::from(value as u32),
        ValueType::I32 => u64::from(value as i32 as u32),
        ValueType::U64 => value as u64,
        ValueType::I64 => value as i64 as u64,
        ValueType::F32 => u64::from((value as f32).to_bits()),
        ValueType::F64 => value.to_bits(),
        ValueType::Bool => u64::from(value != 0.0),
    };
    let n = usize::from(ty.width());
    let mut words: Vec<u16> = (0..n).map(|i| (raw >> (16 * (n - 1 - i))) as u16).collect();
    if order.byte_swap() {
        for w in &mut words {
            *w = w.swap_bytes();
        }
    }
    if order.word_swap() {
        words.reverse();
    }
    words
}

/// The registers (or bits) one value occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub table: Table,
    pub address: u16,
    /// At least 1.
    pub count: u16,
}

impl Span {
    /// One past the last register (or bit) it occupies.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// Limits that shape a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest read in registers, at most 125 (bit tables are always limited to 2000 bits).
    pub max_read: u16,
    /// Largest hole between two values that one read may bridge.
    pub max_gap: u16,
    /// Read every value with its own request (for firmware that refuses multi-value reads).
    pub read_singly: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_read: 125,
            max_gap: 0,
            read_singly: false,
        }
    }
}

/// Checks that spans end inside the 16-bit address space; used by config validation.
pub fn fits_address_space(s: &Span) -> bool {
    s.end() <= 0x1_0000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_to_words(b: &[u8]) -> Vec<u16> {
        b.chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn f32_in_every_order_from_wire_bytes() {
        // 25.0 = 0x41C80000; the PHG-2091 sends it little-endian: 00 00 C8 41 (domain.md §4.4).
        let cases = [
            (ByteOrder::Abcd, [0x41, 0xC8, 0x00, 0x00]),
            (ByteOrder::Cdab, [0x00, 0x00, 0x41, 0xC8]),
            (ByteOrder::Badc, [0xC8, 0x41, 0x00, 0x00]),
            (ByteOrder::Dcba, [0x00, 0x00, 0xC8, 0x41]),
        ];
        for (order, bytes) in cases {
            let w = bytes_to_words(&bytes);
            assert_eq!(decode(&w, ValueType::F32, order, None), 25.0, "{order}");
        }
        // 10.07 pH from the vendor's example reply B8 1E 21 41.
        let w = bytes_to_words(&[0xB8, 0x1E, 0x21, 0x41]);
        let ph = decode(&w, ValueType::F32, ByteOrder::Dcba, None);
        assert!((ph - 10.07).abs() < 1e-5, "{ph}");
    }

    #[test]
    fn integers_and_signs() {
        assert_eq!(
            decode(&[0xFFFF], ValueType::I16, ByteOrder::Abcd, None),
            -1.0
        );
        assert_eq!(
            decode(&[0xFFFF], ValueType::U16, ByteOrder::Abcd, None),
            65535.0
        );
        assert_eq!(
            decode(&[0x0056], ValueType::U16, ByteOrder::Abcd, None),
            86.0
        );
        assert_eq!(
            decode(&[0x5600], ValueType::U16, ByteOrder::Badc, None),
            86.0
        );
        assert_eq!(
            decode(&[0x0001, 0x0002], ValueType::U32, ByteOrder::Abcd, None),
            65538.0
        );
        assert_eq!(
            decode(&[0x0002, 0x0001], ValueType::U32, ByteOrder::Cdab, None),
            65538.0
        );
        assert_eq!(
            decode(&[0xFFFF, 0xFFFE], ValueType::I32, ByteOrder::Abcd, None),
            -2.0
        );
        let w = bytes_to_words(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            decode(&w, ValueType::U64, ByteOrder::Abcd, None),
            0x0102030405060708u64 as f64
        );
        let w = bytes_to_words(&[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            decode(&w, ValueType::U64, ByteOrder::Dcba, None),
            0x0102030405060708u64 as f64
        );
        let w = bytes_to_words(&[7, 8, 5, 6, 3, 4, 1, 2]);
        assert_eq!(
            decode(&w, ValueType::U64, ByteOrder::Cdab, None),
            0x0102030405060708u64 as f64
        );
        let w = bytes_to_words(&[2, 1, 4, 3, 6, 5, 8, 7]);
        assert_eq!(
            decode(&w, ValueType::U64, ByteOrder::Badc, None),
            0x0102030405060708u64 as f64
        );
    }

    #[test]
    fn bools_and_bits() {
        assert_eq!(decode(&[0], ValueType::Bool, ByteOrder::Abcd, None), 0.0);
        assert_eq!(decode(&[7], ValueType::Bool, ByteOrder::Abcd, None), 1.0);
        assert_eq!(
            decode(&[0b100], ValueType::Bool, ByteOrder::Abcd, Some(2)),
            1.0
        );
        assert_eq!(
            decode(&[0b100], ValueType::Bool, ByteOrder::Abcd, Some(1)),
            0.0
        );
    }

    #[test]
    fn short_input_is_nan_not_a_panic() {
        assert!(decode(&[1], ValueType::F32, ByteOrder::Abcd, None).is_nan());
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            v in any::<i32>(), f in any::<f32>(), d in any::<f64>(), oi in 0usize..4
        ) {
            let order = ByteOrder::ALL[oi];
            let v = f64::from(v);
            prop_assert_eq!(decode(&encode(v, ValueType::I32, order), ValueType::I32, order, None), v);
            let u = v.abs().min(65535.0).trunc();
            prop_assert_eq!(decode(&encode(u, ValueType::U16, order), ValueType::U16, order, None), u);
            let f = f64::from(f);
            let back = decode(&encode(f, ValueType::F32, order), ValueType::F32, order, None);
            prop_assert!(back == f || (back.is_nan() && f.is_nan()));
            let back = decode(&encode(d, ValueType::F64, order), ValueType::F64, order, None);
            prop_assert!(back.to_bits() == d.to_bits() || (back.is_nan() && d.is_nan()));
        }
    }
}
