//! Vector, value and property tests of the codec. The vectors are tests/data/hj212-vectors.tsv
//! (a copy of shared/reference/hj212-vectors.tsv; `\r\n` written literally means CR LF).

use super::*;
use proptest::prelude::*;

const VECTORS: &str = include_str!("../../tests/data/hj212-vectors.tsv");

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Valid,
    Invalid,
    Modbus,
}

fn vectors() -> Vec<(String, Kind, Vec<u8>)> {
    VECTORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut c = l.splitn(3, '\t');
            let id = c.next().expect("id").to_string();
            let kind = match c.next().expect("kind") {
                "valid" => Kind::Valid,
                "invalid" => Kind::Invalid,
                "modbus_crc" => Kind::Modbus,
                k => panic!("kind {k}"),
            };
            let frame = c.next().expect("frame").replace("\\r\\n", "\r\n");
            (id, kind, frame.into_bytes())
        })
        .collect()
}

fn vector(id: &str) -> Vec<u8> {
    vectors()
        .into_iter()
        .find(|(i, _, _)| i.starts_with(id) && i.as_bytes().get(id.len()) == Some(&b'_'))
        .unwrap_or_else(|| panic!("vector {id}"))
        .2
}

/// The segment of a (valid) vector.
fn seg_of(id: &str) -> String {
    let f = frames_of(&Framer::new(), &[&vector(id)]).0;
    assert_eq!(f.len(), 1, "{id}");
    f[0].text().expect("plain").into_owned()
}

/// Everything a framer gives for `chunks` pushed one after another, then `finish`.
fn frames_of(proto: &Framer, chunks: &[&[u8]]) -> (Vec<Frame>, Vec<Reject>) {
    let mut f = proto.clone();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for c in chunks {
        f.push(c);
        while let Some(r) = f.next_frame() {
            match r {
                Ok(fr) => ok.push(fr),
                Err(e) => bad.push(e),
            }
        }
        // As the listener does after each read: every cut of every test also checks that
        // giving the buffer back never loses a partial frame.
        f.shrink();
    }
    bad.extend(f.finish());
    (ok, bad)
}

#[test]
fn an_idle_framer_holds_no_buffer_but_keeps_a_partial_frame() {
    let v = vector("V10");
    let (head, tail) = v.split_at(100);
    let mut f = Framer::new();
    f.push(&v);
    assert!(matches!(f.next_frame(), Some(Ok(_))));
    assert!(f.next_frame().is_none());
    f.shrink();
    assert_eq!(f.held(), 0, "nothing buffered: no memory held");
    f.push(head);
    assert!(f.next_frame().is_none());
    f.shrink();
    assert_eq!(f.buffered(), 100);
    assert!(f.held() >= 100, "a partial frame is kept");
    f.push(tail);
    let fr = f.next_frame().expect("frame").expect("valid");
    assert_eq!(fr.text().expect("plain"), seg_of("V10"));
}

fn ways(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut w = vec![
        vec![bytes.to_vec()],
        bytes.iter().map(|&b| vec![b]).collect(),
    ];
    for cut in [
        1,
        2,
        3,
        5,
        6,
        7,
        10,
        bytes.len() / 2,
        bytes.len().saturating_sub(6),
    ] {
        let cut = cut.min(bytes.len());
        w.push(vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()]);
    }
    let mut glued = b"\x00garbage\xff\r\n".to_vec();
    glued.extend_from_slice(bytes);
    w.push(vec![glued.clone()]);
    glued.extend_from_slice(b"zz\x01");
    w.push(vec![glued.clone()]);
    w.push(glued.chunks(7).map(<[u8]>::to_vec).collect());
    w
}

const MODBUS_TOO: [CrcForm; 3] = [CrcForm::Hj212, CrcForm::Modbus, CrcForm::ModbusSwapped];

fn check_vector(id: &str, kind: Kind, bytes: &[u8]) {
    let hj = Framer::new();
    let both = Framer::with(CrcForms::of(&MODBUS_TOO), 65536);
    for (n, way) in ways(bytes).into_iter().enumerate() {
        let chunks: Vec<&[u8]> = way.iter().map(Vec::as_slice).collect();
        for (proto, modbus_ok) in [(&hj, false), (&both, true)] {
            let (ok, bad) = frames_of(proto, &chunks);
            let real_bad: Vec<_> = bad
                .iter()
                .filter(|r| r.reason != RejectReason::Garbage)
                .collect();
            let want_frame = kind == Kind::Valid || (kind == Kind::Modbus && modbus_ok);
            if want_frame {
                assert_eq!(ok.len(), 1, "{id} way {n} modbus {modbus_ok}: {bad:?}");
                assert!(real_bad.is_empty(), "{id} way {n}: {real_bad:?}");
                let want = match (kind, id) {
                    (Kind::Valid, _) => CrcForm::Hj212,
                    (_, "X10_field") => CrcForm::ModbusSwapped,
                    _ => CrcForm::Modbus,
                };
                assert_eq!(ok[0].crc_form(), Some(want), "{id}");
                assert!(!ok[0].encrypted());
                let seg = ok[0].segment().expect("checked");
                assert_eq!(want.compute(seg), ok[0].crc());
                assert_eq!(seg.len(), ok[0].declared_len());
            } else {
                assert!(ok.is_empty(), "{id} way {n} gave a frame");
                assert!(!real_bad.is_empty(), "{id} way {n}: no reject");
            }
        }
    }
}

#[test]
fn every_vector_as_marked_whole_bytewise_cut_and_glued() {
    let v = vectors();
    assert!(v.len() >= 29, "{} vectors", v.len());
    for (id, kind, bytes) in &v {
        check_vector(id, *kind, bytes);
    }
}

#[test]
fn a_stream_of_all_vectors_gives_exactly_the_valid_frames() {
    let v = vectors();
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for (_, kind, b) in &v {
        stream.extend_from_slice(b);
        if *kind == Kind::Valid {
            want.push(b.clone());
        }
    }
    let (ok, _) = frames_of(&Framer::new(), &[&stream]);
    assert_eq!(ok.len(), want.len());
    for (f, w) in ok.iter().zip(&want) {
        assert!(w.starts_with(format!("##{:04}", f.declared_len()).as_bytes()));
        assert_eq!(&w[6..6 + f.declared_len()], f.segment().expect("plain"));
    }
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frames_of(&Framer::new(), &bytewise).0, ok);
}

#[test]
fn x10_needs_the_swapped_modbus_form() {
    let x10 = vector("X10");
    let plain = Framer::with(CrcForms::of(&[CrcForm::Hj212, CrcForm::Modbus]), 65536);
    assert!(frames_of(&plain, &[&x10]).0.is_empty());
    let x5 = vector("X5");
    let swapped = Framer::with(CrcForms::of(&[CrcForm::ModbusSwapped]), 65536);
    assert!(frames_of(&swapped, &[&x5]).0.is_empty());
    assert_eq!(frames_of(&swapped, &[&x10]).0.len(), 1);
}

#[test]
fn x1_length_wrong_but_crc_right_is_rejected() {
    let x1 = vector("X1");
    // The CRC of the bytes actually sent checks, so only the length can refuse it.
    let seg = &x1[6..x1.len() - 4];
    assert_eq!(
        crc::hj212(seg),
        crc::parse_hex4(&x1[x1.len() - 4..]).expect("hex")
    );
    let mut s = x1.clone();
    s.extend_from_slice(&vector("V1"));
    let (ok, bad) = frames_of(&Framer::new(), &[&s]);
    assert_eq!(ok.len(), 1, "only V1");
    assert_eq!(bad[0].reason, RejectReason::Length);
    assert!(bad[0].bytes.len() <= framer::REJECT_COPY);
}

#[test]
fn reject_reasons_and_buffer_cap() {
    let (_, bad) = frames_of(&Framer::new(), &[b"##01a0xxxx"]);
    assert_eq!(bad[0].reason, RejectReason::BadHeader);
    let (_, bad) = frames_of(&Framer::new(), &[&vector("N1")]);
    assert_eq!(bad[0].reason, RejectReason::Crc);
    let (_, bad) = frames_of(&Framer::new(), &[b"hello"]);
    assert_eq!(bad[0].reason, RejectReason::Garbage);
    // A trailing single '#' is kept: the next push can complete the header.
    let v1 = vector("V1");
    let (ok, _) = frames_of(&Framer::new(), &[b"abc#", &v1[1..]]);
    assert_eq!(ok.len(), 1);
    // Over the cap: the oldest bytes go, one Overflow reject, and the framer recovers.
    let mut f = Framer::with(CrcForms::default(), 300);
    f.push(&[b'x'; 1000]);
    let r = f.next_frame().expect("overflow").expect_err("reject");
    assert_eq!(r.reason, RejectReason::Overflow);
    assert_eq!(r.len, 700);
    assert!(r.bytes.len() <= 120);
    let (ok, _) = frames_of(&f, &[&v1]);
    assert_eq!(ok.len(), 1);
    assert!(f.garbage_bytes() > 0 || f.buffered() > 0);
    // A declared length that never arrives, with a new header inside it: resync.
    let mut s = b"##0900QN=1;ST=22;CN=2011".to_vec();
    s.extend_from_slice(&v1);
    let (ok, bad) = frames_of(&Framer::new(), &[&s]);
    assert_eq!(ok.len(), 1);
    assert_eq!(bad[0].reason, RejectReason::Length);
    // reset forgets a partial frame.
    let mut f = Framer::new();
    f.push(&v1[..50]);
    assert!(f.next_frame().is_none());
    f.reset();
    assert_eq!(f.buffered(), 0);
    f.push(&v1);
    assert!(matches!(f.next_frame(), Some(Ok(_))));
}

#[test]
fn values_of_v2() {
    let p = parse(&seg_of("V2")).expect("V2").into_owned();
    assert_eq!(p.cn(), "2051");
    assert_eq!(p.st.as_deref(), Some("22"));
    assert_eq!(p.mn(), Some("JLYP01_AIR01_0001"));
    assert_eq!(p.qn(), Some("20220513162608370"));
    assert_eq!(p.flag(), Some(Flag(4)));
    assert_eq!(p.version(), Version::V2017);
    assert!(!p.flag().expect("flag").ack_wanted());
    assert_eq!(
        p.data_time(),
        Some(jiff::civil::date(2022, 5, 13).at(16, 26, 0, 0))
    );
    assert_eq!(p.factors().len(), 11);
    let pm10 = p.factor("a34002").expect("PM10");
    assert_eq!(pm10.avg(), Some(31.0));
    assert_eq!(pm10.flag(), Some('N'));
    assert_eq!(p.factor("a21005").and_then(Factor::avg), Some(0.427));
    assert_eq!(p.factors()[0].code, "a21004");
    assert_eq!(p.factors()[10].code, "a01006");
    assert!(p.errors.is_empty() && p.warnings.is_empty());
}

#[test]
fn values_of_v10_v12_v4_w7_w9_w10() {
    let p = parse(&seg_of("V10")).expect("V10").into_owned();
    assert_eq!(p.st.as_deref(), Some("39"));
    assert_eq!(p.factors().len(), 9);
    assert_eq!(p.factor("LA").and_then(Factor::rtd), Some(0.0));
    assert_eq!(p.factor("a01008").and_then(|f| f.get("Rtd")), Some("0"));
    assert_eq!(p.factor("a34004").and_then(Factor::flag), None);

    let p = parse(&seg_of("V12")).expect("V12").into_owned();
    assert_eq!(p.mn(), Some(""));
    assert!(p.flag().expect("flag").ack_wanted());
    let n = p.factor("a50001").expect("noise");
    assert_eq!(n.rtd(), Some(0.0));
    assert_eq!(n.flag(), Some('B'));

    let p = parse(&seg_of("V4")).expect("V4").into_owned();
    assert_eq!(p.flag(), Some(Flag(8)));
    assert_eq!(p.version(), Version::V2025);
    assert_eq!(p.factor("w21003").and_then(Factor::rtd), Some(0.09055002));

    let p = parse(&seg_of("W7")).expect("W7").into_owned();
    assert_eq!(p.qn(), None);
    assert_eq!(p.flag(), None);
    assert_eq!(p.version(), Version::V2005);
    assert_eq!(p.factor("a34001").and_then(Factor::avg), Some(0.08));

    let p = parse(&seg_of("W9")).expect("W9").into_owned();
    assert_eq!(
        p.data_time(),
        Some(jiff::civil::date(2016, 8, 24).at(0, 38, 17, 0))
    );
    assert_eq!(p.factor("011").and_then(Factor::rtd), Some(231.0));

    let p = parse(&seg_of("W10")).expect("W10").into_owned();
    assert!(!p.has_cp);
    assert_eq!(p.cn(), "2011");
    assert_eq!(p.mn(), None);
    assert_eq!(
        p.unknown,
        vec![
            (Text::from("USCC"), Text::from("91440101MA59F70720")),
            (Text::from("IMEI"), Text::from("867732039951777"))
        ]
    );
    assert!(p.factors().is_empty());

    let p = parse(&seg_of("W1")).expect("W1").into_owned();
    assert_eq!(p.version(), Version::V2025);
    assert!(p.flag().expect("flag").ack_wanted());
}

#[test]
fn tolerant_segments() {
    // X3's segment (its frame is invalid): a stray Flag=N in CP is a data flag.
    let p = parse("QN=1;ST=39;CN=2011;PW=1;MN=M;Flag=4;CP=&&DataTime=2024112320423050;a01001-Rtd=19.3;Flag=n&&")
        .expect("x3-like");
    assert_eq!(p.flag(), Some(Flag(4)));
    assert_eq!(p.cp.cp_flag.as_deref(), Some("N"));
    assert_eq!(p.data_time(), None, "16 digits is not a time");
    // N4's malformed field name: kept out, listed, the packet still usable.
    let p = parse("QN=1;ST=39;CN=2011;MN=190720099;Flag=5;CP=&&DataTime=20190923154847;a34004-Rtd=12000,a34004-Flag=d;LA-Rtd-Rtd=71.0,LA-Rtd-Flag=N&&")
        .expect("n4-like");
    assert_eq!(p.errors.len(), 2);
    assert_eq!(p.factor("a34004").and_then(Factor::flag), Some('D'));
    // C.48's comma, C.2's space after CP=&&, trailing separators, PNO before PNUM, RF.
    let p = parse("QN=20160801085857534,ST=32;PNO=2;PNUM=3;CN=2051;RF=1;CP=&& DataTime=20160801085857; LA-Rtd=50.1;;&&")
        .expect("c48-like");
    assert_eq!(p.st.as_deref(), Some("32"));
    assert_eq!((p.pnum, p.pno), (Some(3), Some(2)));
    assert!(p.resend());
    assert_eq!(p.factor("LA").and_then(Factor::rtd), Some(50.1));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let p = parse("CN=2011;RF=2;CP=&&&&").expect("rf2");
    assert!(!p.resend());
    assert_eq!(p.warnings.len(), 1);
    // X7: QN inside CP; X5: comma between params.
    let p = parse("ST=91;CN=9013;PW=123456;MN=ABCDEFG1234567;Flag=0;CP=&&QN=20170516010101001&&")
        .expect("x7");
    assert_eq!(p.qn(), Some("20170516010101001"));
    let p = parse("CN=2051;CP=&&BeginTime=20170302000000,EndTime=20170303000000&&").expect("x5");
    assert_eq!(p.param("EndTime"), Some("20170303000000"));
    // Unusable headers.
    assert_eq!(parse("QN=1;ST=22;CP=&&&&"), Err(ParseError::NoCn));
    assert!(matches!(
        parse("CN=2011;Flag=x;CP=&&&&"),
        Err(ParseError::BadNumber(..))
    ));
    assert!(matches!(
        parse("CN=2011;Flag=256;CP=&&&&"),
        Err(ParseError::BadNumber(..))
    ));
    assert_eq!(parse("CN=2011;CP=&&a"), Err(ParseError::UnclosedCp));
}

#[test]
fn numbers_and_times() {
    let dt = parse_time("20220513162600").expect("a time");
    assert_eq!(super::format_time(dt), "20220513162600");
    assert_eq!(number("-1.03"), Some(-1.03));
    assert_eq!(number("NaN"), None);
    assert_eq!(number("inf"), None);
    assert_eq!(number("1e999"), None);
    assert_eq!(number(""), None);
    assert_eq!(
        parse_time("20160824003817123"),
        Some(jiff::civil::date(2016, 8, 24).at(0, 38, 17, 123_000_000))
    );
    assert_eq!(parse_time("20161324003817"), None);
    assert_eq!(parse_time("2016082400381"), None);
    assert_eq!(parse_time("2016-08-24 00:38"), None);
}

#[test]
fn encode_reproduces_the_vectors_in_standard_order() {
    for id in ["V1", "V6", "V7", "V8", "V12", "W1"] {
        let seg = seg_of(id);
        let p = parse(&seg).expect(id);
        assert_eq!(encode_segment(&p), seg, "{id}");
        let v = vector(id);
        let text = String::from_utf8(v).expect("ascii");
        let enc = encode(&p);
        assert_eq!(
            enc.trim_end(),
            text.trim_end()
                .to_uppercase()
                .replace(&seg.to_uppercase(), &seg)
        );
        assert!(enc.ends_with("\r\n"));
    }
}

#[test]
fn ack_9014_echoes_qn_and_keeps_the_version() {
    let p = parse(&seg_of("V1")).expect("V1").into_owned();
    let a = ack_9014(&p);
    assert_eq!(
        a,
        wrap(
            "QN=20160801085857223;ST=91;CN=9014;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&"
        )
    );
    let p = parse(&seg_of("W1")).expect("W1").into_owned();
    let a = parse(
        &frames_of(&Framer::new(), &[ack_9014(&p).as_bytes()]).0[0]
            .text()
            .expect("t"),
    )
    .expect("ack")
    .into_owned();
    assert_eq!(a.flag(), Some(Flag(8)));
    assert_eq!(a.cn(), "9014");
    assert_eq!(a.st.as_deref(), Some("91"));
    assert_eq!(a.qn(), p.qn());
}

#[test]
fn a_heartbeat_is_answered_9013_with_its_qn() {
    // HJ 212-2025's heartbeat 9015 with the ack bit (Flag=9) [S]: CN=9013, ST=91, Flag=8.
    let p = parse("QN=20260101000000001;ST=39;CN=9015;PW=123456;MN=HB01;Flag=9;CP=&&&&")
        .expect("heartbeat");
    assert_eq!(
        super::encode::answer_9013(&p),
        wrap("QN=20260101000000001;ST=91;CN=9013;PW=123456;MN=HB01;Flag=8;CP=&&&&")
    );
}

fn big_packet(n: usize) -> Packet<'static> {
    let mut p = parse(&seg_of("V2")).expect("V2").into_owned();
    p.cp.factors = (0..n)
        .map(|i| Factor {
            code: format!("a{i:05}").into(),
            fields: vec![
                ("Avg".into(), format!("{i}.5").into()),
                ("Flag".into(), "N".into()),
            ],
        })
        .collect();
    p
}

#[test]
fn split_at_code_boundaries_with_pnum_pno_and_datatime() {
    let p = big_packet(60);
    let parts = split(&p, 400);
    assert!(parts.len() > 2);
    let mut merged = Vec::new();
    for (i, fr) in parts.iter().enumerate() {
        let (ok, bad) = frames_of(&Framer::new(), &[fr.as_bytes()]);
        assert!(bad.is_empty() && ok.len() == 1, "{bad:?}");
        assert!(ok[0].declared_len() <= 400);
        let text = ok[0].text().expect("t");
        let q = parse(&text).expect("part");
        assert_eq!(q.pnum, Some(parts.len() as u32));
        assert_eq!(q.pno, Some(i as u32 + 1));
        assert!(fr.contains(&format!("PNUM={:04};PNO={:04};", parts.len(), i + 1)));
        assert!(q.flag().expect("flag").split());
        assert_eq!(q.version(), Version::V2017);
        assert_eq!(q.data_time(), p.data_time());
        merged.extend(q.cp.factors.into_iter().map(Factor::into_owned));
    }
    assert_eq!(merged, p.cp.factors);
    assert_eq!(split(&big_packet(3), 1024).len(), 1);
}

#[test]
fn sm4_2025_appendix_a2_vectors_rebuilt() {
    // hj212-field.md §5.2 [S]: E1 = W2 with its area encrypted under 16 × 0x30: 1128 characters
    // follow `##0295`, the first block is E43E159ACFAB242CB53155FB8B9281A1, CRC 2200.
    let key = [0x30u8; 16];
    let w2 = seg_of("W2");
    let e1 = encrypt_segment(&w2, &key);
    assert!(e1.starts_with("##0295"));
    assert_eq!(e1.trim_end().len() - 6 - 4, 1128);
    assert!(e1.contains(
        "CP=&&{0xE4,0x3E,0x15,0x9A,0xCF,0xAB,0x24,0x2C,0xB5,0x31,0x55,0xFB,0x8B,0x92,0x81,0xA1,"
    ));
    assert!(e1.trim_end().ends_with("0x8D,0xBF,0x8B,0x41}&&2200"));
    // E2 = W3: 9 blocks + the plain tail `g=N`; 811 characters; CRC B541.
    let w3 = seg_of("W3");
    let e2 = encrypt_segment(&w3, &key);
    assert_eq!(e2.trim_end().len() - 10, 811);
    assert!(e2.trim_end().ends_with("0x0D,0x03,0xA4}g=N&&B541"));
    // Framed by delimiter, whole and byte by byte, then decrypted and checked.
    for s in [e1.clone(), e2.clone()] {
        for way in [
            vec![s.as_bytes().to_vec()],
            s.bytes().map(|b| vec![b]).collect(),
        ] {
            let chunks: Vec<&[u8]> = way.iter().map(Vec::as_slice).collect();
            let (ok, bad) = frames_of(&Framer::new(), &chunks);
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(ok.len(), 1);
            assert!(ok[0].encrypted());
            assert_eq!(ok[0].segment(), None);
            assert_eq!(ok[0].crc_form(), None);
            assert_eq!(ok[0].mn().as_deref(), Some("010000A8900016F000169DC0"));
            let d = decrypt_frame(&ok[0], &key).expect("decrypts");
            assert!(!d.encrypted());
            assert_eq!(d.crc_form(), Some(CrcForm::Hj212));
            let plain = if s == e1 { &w2 } else { &w3 };
            assert_eq!(d.text().expect("t"), plain.as_str());
        }
    }
    // Between other frames, and with the wrong key.
    let mut stream = vector("V1");
    stream.extend_from_slice(e1.trim_end().as_bytes());
    stream.extend_from_slice(&vector("V10"));
    let (ok, _) = frames_of(&Framer::new(), &[&stream]);
    assert_eq!(ok.len(), 3);
    assert!(ok[1].encrypted());
    let wrong = decrypt_frame(&ok[1], &[0x31; 16]).expect_err("wrong key");
    assert_eq!(wrong.reason, RejectReason::Crc);
    // Tampered ciphertext text.
    let bad = e1.replacen("0xE4,", "0xE4,0x", 1);
    let (ok, _) = frames_of(&Framer::new(), &[bad.as_bytes()]);
    assert_eq!(
        decrypt_frame(&ok[0], &key).expect_err("bad").reason,
        RejectReason::Cipher
    );
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-1.0e6f64..1.0e6).prop_map(|v| format!("{v:.3}")),
        (0u32..100000).prop_map(|v| v.to_string()),
        "[A-Za-z0-9._]{0,8}",
    ]
}

prop_compose! {
    fn arb_factor()(code in "[a-z][0-9]{5}|LA|L10|B01|[0-9]{3}",
                    fields in proptest::collection::vec(
                        (prop_oneof![Just("Rtd"), Just("Avg"), Just("Min"), Just("Max"), Just("Cou"), Just("ZsRtd"), Just("Data")], arb_value()), 1..5),
                    flag in proptest::option::of("[NFMSDCTB]")) -> Factor<'static> {
        let mut fields: Vec<(Text<'static>, Text<'static>)> = fields.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        if let Some(f) = flag { fields.push(("Flag".into(), f.into())); }
        Factor { code: code.into(), fields }
    }
}

prop_compose! {
    fn arb_packet()(qn in proptest::option::of("[0-9]{17}"),
                    st in proptest::option::of("[0-9]{2}"),
                    cn in "[0-9]{4}",
                    pw in proptest::option::of("[0-9]{6}"),
                    mn in proptest::option::of("[A-Za-z0-9_]{0,24}"),
                    flag in proptest::option::of(0u8..=255),
                    rf in any::<bool>(),
                    dt in proptest::option::of("20[0-9]{12}"),
                    factors in proptest::collection::vec(arb_factor(), 0..12),
                    cp_flag in proptest::option::of("[NDB]")) -> Packet<'static> {
        // Distinct codes: the parser groups a repeated code into its first appearance.
        let mut seen = std::collections::HashSet::new();
        let factors: Vec<Factor> = factors.into_iter().filter(|f| seen.insert(f.code.clone())).collect();
        Packet {
            qn: qn.map(Text::from), st: st.map(Text::from), cn: cn.into(), pw: pw.map(Text::from), mn: mn.map(Text::from),
            flag: flag.map(Flag),
            rf: rf.then(|| "1".into()),
            has_cp: true,
            cp: Cp { params: dt.map(|d| ("DataTime".into(), d.into())).into_iter().collect(), factors, cp_flag: cp_flag.map(Text::from) },
            ..Packet::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_frame_parse_is_the_identity(p in arb_packet()) {
        let wire = encode(&p);
        let (ok, bad) = frames_of(&Framer::new(), &[wire.as_bytes()]);
        prop_assert!(bad.is_empty(), "{:?}", bad);
        prop_assert_eq!(ok.len(), 1);
        let text = ok[0].text().expect("plain");
        let q = parse(&text).expect("parses");
        prop_assert_eq!(q, p);
    }

    #[test]
    fn any_bytes_never_panic_and_never_give_an_unchecked_frame(
        data in proptest::collection::vec(prop_oneof![
            Just(b'#'), Just(b'0'), Just(b'&'), Just(b'\r'), any::<u8>()], 0..600),
        cuts in proptest::collection::vec(1usize..64, 0..20),
        modbus in any::<bool>()) {
        let forms = if modbus { CrcForms::of(&MODBUS_TOO) } else { CrcForms::default() };
        let mut f = Framer::with(forms, 256);
        let mut rest = &data[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts.get(i).copied().unwrap_or(rest.len()).min(rest.len());
            f.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(r) = f.next_frame() {
                match r {
                    Ok(fr) => {
                        if let Some(seg) = fr.segment() {
                            prop_assert_eq!(seg.len(), fr.declared_len());
                            prop_assert!(forms.check(seg, fr.crc()).is_some());
                            let _ = parse(&fr.text().expect("t"));
                        } else {
                            prop_assert!(fr.encrypted());
                            if let Ok(d) = decrypt_frame(&fr, &[0x30; 16]) {
                                prop_assert!(forms.check(d.segment().expect("s"), d.crc()).is_some());
                            }
                        }
                    }
                    Err(r) => prop_assert!(r.bytes.len() <= 120),
                }
            }
        }
        let _ = f.finish();
    }

    #[test]
    fn random_cuts_give_the_frames_of_the_whole_stream(
        picks in proptest::collection::vec(0usize..40, 1..12),
        cuts in proptest::collection::vec(0usize..4000, 0..12)) {
        let v = vectors();
        let key = [0x30u8; 16];
        let enc = encrypt_segment(&seg_of("W3"), &key);
        let mut stream = Vec::new();
        for k in picks {
            match v.get(k) {
                Some((_, _, b)) => stream.extend_from_slice(b),
                None => stream.extend_from_slice(enc.as_bytes()),
            }
        }
        let whole = frames_of(&Framer::new(), &[&stream]).0;
        let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in at {
            chunks.push(&stream[last..c]);
            last = c;
        }
        chunks.push(&stream[last..]);
        prop_assert_eq!(frames_of(&Framer::new(), &chunks).0, whole);
    }
}
