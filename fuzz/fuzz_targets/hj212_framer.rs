//! The HJ 212 framer: arbitrary bytes pushed in arbitrary chunks (the first byte picks the CRC
//! forms and the chunk sizes), every frame's CRC and length must check, an encrypted frame's
//! only after `decrypt_frame`; nothing may panic.
#![no_main]

use dustgate::hj212::{CrcForm, CrcForms, Framer, decrypt_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let forms = match sel & 3 {
        0 => CrcForms::default(),
        1 => CrcForms::of(&[CrcForm::Modbus]),
        2 => CrcForms::of(&[CrcForm::ModbusSwapped, CrcForm::Hj212]),
        _ => CrcForms::of(&[CrcForm::Hj212, CrcForm::Modbus, CrcForm::ModbusSwapped]),
    };
    let cap = if sel & 4 != 0 { 64 } else { 65536 };
    let chunk = usize::from(sel >> 3) + 1;
    let mut f = Framer::with(forms, cap);
    for c in rest.chunks(chunk) {
        f.push(c);
        while let Some(r) = f.next_frame() {
            match r {
                Ok(fr) => match fr.segment() {
                    Some(seg) => {
                        assert_eq!(seg.len(), fr.declared_len());
                        assert!(forms.check(seg, fr.crc()).is_some(), "unchecked frame");
                    }
                    None => {
                        assert!(fr.encrypted());
                        if let Ok(d) = decrypt_frame(&fr, &[0x30; 16]) {
                            let seg = d.segment().expect("decrypted");
                            assert_eq!(seg.len(), d.declared_len());
                            assert!(forms.check(seg, d.crc()).is_some());
                        }
                    }
                },
                Err(r) => assert!(r.bytes.len() <= 120 && r.bytes.len() <= r.len),
            }
        }
    }
    let _ = f.finish();
});
