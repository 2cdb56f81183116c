//! The parser and encoder, case by case, against the spec's examples.

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A whole header parsed from `bytes`, and its length.
fn done(bytes: &[u8], accept: Accept) -> (Header, usize) {
    match parse(bytes, accept) {
        Parsed::Done { header, consumed } => (header, consumed),
        other => panic!(
            "{:?}: expected a header, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn invalid(bytes: &[u8]) -> Reason {
    match parse(bytes, Accept::Any) {
        Parsed::Invalid(reason) => reason,
        other => panic!(
            "{:?}: expected a refusal, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Every strict prefix of `bytes` asks for more.
fn prefixes_need_more(bytes: &[u8]) {
    for end in 0..bytes.len() {
        assert_eq!(
            parse(&bytes[..end], Accept::Any),
            Parsed::NeedMore,
            "prefix of {end} bytes"
        );
    }
}

/// A v2 header: version and command, family and transport, then `block`.
fn v2(version_command: u8, family_transport: u8, block: &[u8]) -> Vec<u8> {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.extend([version_command, family_transport]);
    bytes.extend((block.len() as u16).to_be_bytes());
    bytes.extend(block);
    bytes
}

const V4_BLOCK: [u8; 12] = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb];

#[test]
fn v1_tcp4_is_the_specs_example_and_leaves_the_data() {
    let bytes = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
    let (header, consumed) = done(bytes, Accept::Any);
    assert_eq!(&bytes[consumed..], b"GET /");
    assert_eq!(
        header,
        Header::tcp(
            Version::V1,
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443")
        )
    );
    assert_eq!(header.source(), Some(addr("192.168.0.1:56324")));
    prefixes_need_more(&bytes[..consumed]);
}

#[test]
fn v1_tcp6_and_unknown() {
    let (header, _) = done(b"PROXY TCP6 ::1 2001:db8::2 1 65535\r\n", Accept::V1);
    assert_eq!(header.source(), Some(addr("[::1]:1")));
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        let (header, consumed) = done(line, Accept::Any);
        assert_eq!(consumed, line.len());
        assert_eq!(header.addresses, Addresses::Unknown);
        assert_eq!(header.source(), None);
    }
}

#[test]
fn v1_is_bounded_at_107_bytes() {
    // The longest line the spec allows: UNKNOWN with padding to 107 bytes.
    let mut longest = b"PROXY UNKNOWN ".to_vec();
    longest.resize(V1_MAX - 2, b'x');
    longest.extend(b"\r\n");
    assert_eq!(done(&longest, Accept::Any).1, V1_MAX);
    let mut too_long = longest[..V1_MAX - 2].to_vec();
    too_long.extend(b"y\r\n");
    assert_eq!(invalid(&too_long), Reason::V1TooLong);
    assert_eq!(invalid(&too_long[..V1_MAX]), Reason::V1TooLong);
}

#[test]
fn v1_malformed_lines_say_how() {
    let cases: &[(&[u8], Reason)] = &[
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Reason::V1Syntax),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", Reason::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Reason::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Reason::V1Syntax),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Reason::V1Syntax),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Reason::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Reason::V1Syntax),
        (b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n", Reason::V1Syntax),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", Reason::V1Address),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", Reason::V1Address),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", Reason::V1Address),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Reason::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", Reason::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", Reason::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", Reason::V1Port),
    ];
    for (bytes, reason) in cases {
        assert_eq!(
            invalid(bytes),
            *reason,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn anything_else_is_refused_at_its_first_wrong_byte() {
    assert_eq!(invalid(b"G"), Reason::Signature);
    assert_eq!(invalid(b"GET / HTTP/1.1\r\n"), Reason::Signature);
    assert_eq!(invalid(b"PROXX TCP4"), Reason::Signature);
    assert_eq!(invalid(b"\r\n\r\n\0\r\nQUIT!"), Reason::Signature);
    assert_eq!(invalid(b"\r\n\r\nhello"), Reason::Signature);
    assert_eq!(parse(b"", Accept::Any), Parsed::NeedMore);
    assert_eq!(parse(b"PRO", Accept::Any), Parsed::NeedMore);
    assert_eq!(parse(b"\r\n\r\n\0", Accept::Any), Parsed::NeedMore);
}

#[test]
fn versions_not_accepted_are_refused_as_such() {
    let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    assert_eq!(
        parse(line, Accept::V2),
        Parsed::Invalid(Reason::V1NotAccepted)
    );
    assert_eq!(
        parse(&line[..6], Accept::V2),
        Parsed::Invalid(Reason::V1NotAccepted)
    );
    let binary = v2(0x21, 0x11, &V4_BLOCK);
    assert_eq!(
        parse(&binary, Accept::V1),
        Parsed::Invalid(Reason::V2NotAccepted)
    );
    assert!(matches!(parse(&binary, Accept::V2), Parsed::Done { .. }));
    assert!(matches!(parse(line, Accept::V1), Parsed::Done { .. }));
}

#[test]
fn v2_proxy_over_ipv4_and_ipv6() {
    let mut bytes = v2(0x21, 0x11, &V4_BLOCK);
    bytes.extend(b"data");
    let (header, consumed) = done(&bytes, Accept::Any);
    assert_eq!(consumed, 16 + 12);
    assert_eq!(
        header,
        Header::tcp(
            Version::V2,
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443")
        )
    );
    prefixes_need_more(&bytes[..consumed]);

    let mut block = Vec::new();
    block.extend(
        addr("[2001:db8::1]:0")
            .ip()
            .to_string()
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    block.extend(Ipv6Addr::LOCALHOST.octets());
    block.extend([0, 80, 1, 0]);
    let (header, _) = done(&v2(0x21, 0x21, &block), Accept::Any);
    assert_eq!(
        header,
        Header::tcp(Version::V2, addr("[2001:db8::1]:80"), addr("[::1]:256"))
    );
}

#[test]
fn v2_local_is_a_health_check_whatever_its_block() {
    for (family, block) in [
        (0x00, &[][..]),
        (0x11, &V4_BLOCK[..]),
        (0x77, &[1, 2, 3][..]),
    ] {
        let (header, consumed) = done(&v2(0x20, family, block), Accept::Any);
        assert_eq!(header, Header::local(Version::V2));
        assert_eq!(consumed, 16 + block.len());
        assert_eq!(header.source(), None);
    }
}

#[test]
fn v2_unspec_unix_and_dgram() {
    let (header, _) = done(&v2(0x21, 0x00, &[]), Accept::Any);
    assert_eq!(
        (header.addresses, header.transport),
        (Addresses::Unknown, Transport::Unspec)
    );
    let mut block = vec![0u8; 216];
    block[..4].copy_from_slice(b"/a/b");
    block[108..110].copy_from_slice(b"/c");
    let (header, _) = done(&v2(0x21, 0x31, &block), Accept::Any);
    let unix = Addresses::Unix {
        source: b"/a/b".to_vec(),
        destination: b"/c".to_vec(),
    };
    assert_eq!(header.addresses, unix);
    let (header, _) = done(&v2(0x21, 0x12, &V4_BLOCK), Accept::Any);
    assert_eq!(header.transport, Transport::Datagram);
}

#[test]
fn v2_tlvs_are_recorded_and_held_to_the_length() {
    let mut block = V4_BLOCK.to_vec();
    block.extend([0x02, 0, 4]);
    block.extend(b"host");
    block.extend([0xea, 0, 0]);
    let (header, _) = done(&v2(0x21, 0x11, &block), Accept::Any);
    let tlvs = vec![
        Tlv {
            kind: 0x02,
            value: b"host".to_vec(),
        },
        Tlv {
            kind: 0xea,
            value: Vec::new(),
        },
    ];
    assert_eq!(header.tlvs, tlvs);
    assert!(header.to_string().ends_with(", 2 TLVs"));
    // A TLV whose value runs past the end, and one cut in its own header.
    let mut past = V4_BLOCK.to_vec();
    past.extend([0x02, 0, 5]);
    past.extend(b"host");
    assert_eq!(invalid(&v2(0x21, 0x11, &past)), Reason::V2Tlv);
    let mut cut = V4_BLOCK.to_vec();
    cut.extend([0x02, 0]);
    assert_eq!(invalid(&v2(0x21, 0x11, &cut)), Reason::V2Tlv);
}

#[test]
fn v2_malformed_headers_say_how() {
    assert_eq!(invalid(&v2(0x11, 0x11, &V4_BLOCK)), Reason::V2Version);
    assert_eq!(invalid(&v2(0x31, 0x11, &V4_BLOCK)), Reason::V2Version);
    assert_eq!(invalid(&v2(0x22, 0x11, &V4_BLOCK)), Reason::V2Command);
    assert_eq!(invalid(&v2(0x21, 0x41, &V4_BLOCK)), Reason::V2Family);
    assert_eq!(invalid(&v2(0x21, 0x13, &V4_BLOCK)), Reason::V2Family);
    assert_eq!(invalid(&v2(0x21, 0x10, &V4_BLOCK)), Reason::V2Family);
    assert_eq!(invalid(&v2(0x21, 0x01, &V4_BLOCK)), Reason::V2Family);
    assert_eq!(invalid(&v2(0x21, 0x11, &V4_BLOCK[..11])), Reason::V2Length);
    assert_eq!(invalid(&v2(0x21, 0x21, &V4_BLOCK)), Reason::V2Length);
    // Refused from the fixed part alone, before the block comes.
    let long = v2(0x21, 0x11, &vec![0; V2_MAX - 16 + 1]);
    assert_eq!(invalid(&long[..16]), Reason::V2TooLong);
    let short = v2(0x21, 0x11, &V4_BLOCK[..4]);
    assert_eq!(invalid(&short[..16]), Reason::V2Length);
    // The longest accepted: one TLV filling it.
    let mut block = V4_BLOCK.to_vec();
    let value = V2_MAX - 16 - 12 - 3;
    block.extend([0xe0, (value >> 8) as u8, value as u8]);
    block.resize(V2_MAX - 16, 7);
    assert_eq!(done(&v2(0x21, 0x11, &block), Accept::Any).1, V2_MAX);
}

#[test]
fn encoded_headers_parse_back() {
    let pairs = [
        (addr("10.0.0.1:1234"), addr("10.0.0.2:80")),
        (addr("[2001:db8::1]:1"), addr("[::1]:7")),
    ];
    for version in [Version::V1, Version::V2] {
        for (source, destination) in pairs {
            let header = Header::tcp(version, source, destination);
            let bytes = header.encode();
            assert_eq!(done(&bytes, Accept::Any), (header, bytes.len()));
        }
        let local = Header::local(version);
        let (parsed, _) = done(&local.encode(), Accept::Any);
        match version {
            Version::V1 => assert_eq!(parsed.addresses, Addresses::Unknown),
            Version::V2 => assert_eq!(parsed, local),
        }
    }
    assert_eq!(
        Header::tcp(Version::V1, addr("1.2.3.4:5"), addr("[::1]:6")).encode(),
        b"PROXY TCP6 ::ffff:1.2.3.4 ::1 5 6\r\n"
    );
    let mut header = Header::tcp(Version::V2, addr("1.2.3.4:5"), addr("5.6.7.8:9"));
    header.tlvs.push(Tlv {
        kind: 0x02,
        value: b"example.com".to_vec(),
    });
    header.tlvs.push(Tlv {
        kind: 0xe0,
        value: vec![0; V2_MAX],
    });
    let bytes = header.encode();
    header.tlvs.pop();
    assert_eq!(done(&bytes, Accept::V2), (header, bytes.len()));
}

#[test]
fn reasons_are_listed_once_each() {
    for (index, reason) in Reason::ALL.iter().enumerate() {
        assert_eq!(reason.index(), index);
        assert!(!reason.to_string().is_empty());
    }
}
