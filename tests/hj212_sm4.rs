//! Our SM4 (RustCrypto `sm4`, through `dustgate::hj212`) against an independent one: OpenSSL's,
//! through the Python `cryptography` package (tests/peers/hj212_sm4.py), both directions on
//! random data areas; then an encrypted frame made by the peer through Framer + decrypt_frame.
//! The peer's Python is `$DUSTGATE_PYTHON` (scripts/test sets it), else target/peers-venv; when it
//! is missing the test fails and says how to install it.

use std::path::PathBuf;
use std::process::Command;

use dustgate::hj212::{self, CrcForm, Framer, decrypt_frame, sm4};

const MISSING: &str = "SM4 peer missing: run scripts/test (it installs cryptography==50.0.2 into \
     target/peers-venv), or `target/peers-venv/bin/python -m pip install cryptography==50.0.2` \
     and set DUSTGATE_PYTHON to that python";

fn python() -> PathBuf {
    match std::env::var_os("DUSTGATE_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv/bin/python"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("peer printed hex"))
        .collect()
}

/// The peer's `enc`/`dec` of `data` (whole blocks) under `key`.
fn peer(op: &str, key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let py = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/hj212_sm4.py");
    let out = Command::new(&py)
        .arg(&script)
        .args([op, &hex(key), &hex(data)])
        .output()
        .unwrap_or_else(|e| panic!("{MISSING} [cannot run {}: {e}]", py.display()));
    assert!(
        out.status.success(),
        "{MISSING} [{} {}: {}]",
        py.display(),
        script.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    unhex(&String::from_utf8_lossy(&out.stdout))
}

/// A small deterministic generator (xorshift64*), so a failure is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize, printable: bool) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let v = self.next() as u8;
                if printable { b' ' + v % 95 } else { v }
            })
            .collect()
    }
}

#[test]
fn sm4_agrees_with_openssl_both_directions() {
    // GB/T 32907 check vector first.
    let k: [u8; 16] = unhex("0123456789abcdeffedcba9876543210")
        .try_into()
        .expect("16");
    assert_eq!(
        hex(&peer("enc", &k, &k)),
        "681edf34d206965e86b3e94f536e4246"
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..12 {
        let key: [u8; 16] = rng.bytes(16, false).try_into().expect("16");
        let blocks = 1 + (rng.next() % 20) as usize;
        let plain = rng.bytes(16 * blocks, round % 2 == 0);
        let mut ours = plain.clone();
        sm4::encrypt_blocks(&key, &mut ours);
        assert_eq!(ours, peer("enc", &key, &plain), "encrypt, round {round}");
        let cipher = rng.bytes(16 * blocks, false);
        let mut back = cipher.clone();
        sm4::decrypt_blocks(&key, &mut back);
        assert_eq!(back, peer("dec", &key, &cipher), "decrypt, round {round}");
    }
}

#[test]
fn a_frame_encrypted_by_the_peer_frames_and_decrypts() {
    let key = [0x30u8; 16];
    let seg = "QN=20240520210700000;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;\
               CP=&&DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,\
               a01011-Flag=N;a01014-Min=3.20,a01014-Avg=3.20,a01014-Max=3.20,a01014-Flag=N&&";
    let start = seg.find("CP=&&").expect("cp") + 5;
    let area = &seg.as_bytes()[start..seg.len() - 2];
    let full = area.len() / 16 * 16;
    let cipher = peer("enc", &key, &area[..full]);
    let text: Vec<String> = cipher.iter().map(|b| format!("0x{b:02X}")).collect();
    let tail = std::str::from_utf8(&area[full..]).expect("ascii");
    let wire = format!(
        "##{:04}{}{{{}}}{tail}&&{:04X}\r\n",
        seg.len(),
        &seg[..start],
        text.join(","),
        CrcForm::Hj212.compute(seg.as_bytes())
    );
    // Our encoder writes the same wire text.
    assert_eq!(hj212::encrypt_segment(seg, &key), wire);
    let mut f = Framer::new();
    for b in wire.as_bytes() {
        f.push(std::slice::from_ref(b));
    }
    let frame = f.next_frame().expect("a frame").expect("not a reject");
    assert!(f.next_frame().is_none());
    assert!(frame.encrypted() && frame.segment().is_none());
    let plain = decrypt_frame(&frame, &key).expect("decrypts and checks");
    assert_eq!(plain.text().expect("plain"), seg);
    let text = plain.text().expect("plain");
    let p = hj212::parse(&text).expect("parses");
    assert_eq!(p.factor("a01014").and_then(|x| x.avg()), Some(3.2));
}
