//! Modbus reply decoding: an arbitrary reply (registers or bits, of any length and function)
//! checked against a read by `fit`, then every value type, byte order and bit decoded from it by
//! `value_of` at every offset, and `register::decode` on the raw words.
#![no_main]

use dustgate::config::profile::Register;
use dustgate::register::{ByteOrder, Table, ValueType, decode};
use dustgate::sources::modbus::planner::Read;
use dustgate::sources::modbus::request::{Data, fit, value_of};
use libfuzzer_sys::fuzz_target;
use tokio_modbus::Response;

const TABLES: [Table; 4] = [Table::Holding, Table::Input, Table::Coil, Table::Discrete];

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, body) = data.split_at(6);
    let table = TABLES[usize::from(head[0] & 3)];
    let start = u16::from_be_bytes([head[1], head[2]]);
    let count = u16::from_be_bytes([head[3], head[4]]) % 2048;
    let read = Read { table, start, count };
    let words: Vec<u16> = body
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    let bits: Vec<bool> = body
        .iter()
        .flat_map(|b| (0..8).map(move |i| b >> i & 1 == 1))
        .collect();
    let response = match head[5] & 7 {
        0 => Response::ReadHoldingRegisters(words.clone()),
        1 => Response::ReadInputRegisters(words.clone()),
        2 => Response::ReadCoils(bits),
        3 => Response::ReadDiscreteInputs(bits),
        4 => Response::WriteSingleRegister(start, count),
        5 => Response::WriteSingleCoil(start, head[5] & 8 != 0),
        6 => Response::WriteMultipleRegisters(start, count),
        _ => Response::ReadWriteMultipleRegisters(words.clone()),
    };
    let fitted = fit(read, response);
    if let Ok(d) = &fitted {
        assert_eq!(d.len(), usize::from(count), "fit kept a reply of another length");
    }
    let datas = [fitted.ok(), Some(Data::Words(words.clone()))];
    let scale = if head[5] & 0x10 != 0 { 0.1 } else { 1.0 };
    for ty in ValueType::ALL {
        for order in ByteOrder::ALL {
            for bit in [None, Some(head[0] >> 4)] {
                let _ = decode(&words, ty, order, bit);
                let reg = Register {
                    metric: "pm10".into(),
                    measurement: "air".into(),
                    table,
                    address: start,
                    ty,
                    order,
                    bit,
                    scale,
                    offset: 0.0,
                    writable: false,
                    note: None,
                    range: None,
                };
                for d in datas.iter().flatten() {
                    for offset in 0..=d.len().min(8) + 1 {
                        let _ = value_of(&reg, d, offset);
                    }
                }
            }
        }
    }
});
