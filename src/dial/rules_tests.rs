use super::*;

fn rule(s: &str) -> Rule {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules(allow: &[&str], deny: &[&str]) -> Rules {
    Rules {
        allow: allow.iter().map(|s| rule(s)).collect(),
        deny: deny.iter().map(|s| rule(s)).collect(),
    }
}

type Ports = Option<(u16, u16)>;

#[test]
fn parses_every_pattern_kind() {
    use Pattern::*;
    let host = |s: &str| Host(s.into());
    let suffix = |s: &str| Suffix(s.into());
    let cases: &[(&str, Pattern, Ports)] = &[
        ("*", Any, None),
        ("*:22", Any, Some((22, 22))),
        ("10.1.2.3", Ip(ip("10.1.2.3")), None),
        ("10.1.2.3:443", Ip(ip("10.1.2.3")), Some((443, 443))),
        ("::1", Ip(ip("::1")), None),
        ("[::1]", Ip(ip("::1")), None),
        ("[::1]:22", Ip(ip("::1")), Some((22, 22))),
        ("[::1]:1000-2000", Ip(ip("::1")), Some((1000, 2000))),
        // A bare IPv6 address never has ports: the last group is part of the address.
        ("::1:22", Ip(ip("::1:22")), None),
        ("fe80::1", Ip(ip("fe80::1")), None),
        ("::ffff:127.0.0.1", Ip(ip("127.0.0.1")), None),
        ("[::ffff:127.0.0.1]:80", Ip(ip("127.0.0.1")), Some((80, 80))),
        ("10.0.0.0/8", Cidr(ip("10.0.0.0"), 8), None),
        ("10.0.0.0/8:443", Cidr(ip("10.0.0.0"), 8), Some((443, 443))),
        ("10.1.2.3/8", Cidr(ip("10.0.0.0"), 8), None),
        ("10.1.2.3/32", Cidr(ip("10.1.2.3"), 32), None),
        ("0.0.0.0/0", Cidr(ip("0.0.0.0"), 0), None),
        ("192.168.1.255/23", Cidr(ip("192.168.0.0"), 23), None),
        ("fd00::/8", Cidr(ip("fd00::"), 8), None),
        ("fdab:cd::1/8", Cidr(ip("fd00::"), 8), None),
        ("fd00::/8:443", Cidr(ip("fd00::"), 8), Some((443, 443))),
        ("[fd00::]/8", Cidr(ip("fd00::"), 8), None),
        ("[fd00::]/8:80-81", Cidr(ip("fd00::"), 8), Some((80, 81))),
        ("::/0", Cidr(ip("::"), 0), None),
        ("::1/128", Cidr(ip("::1"), 128), None),
        ("::ffff:127.0.0.0/104", Cidr(ip("127.0.0.0"), 8), None),
        ("::ffff:0:0/96", Cidr(ip("0.0.0.0"), 0), None),
        ("example.com", host("example.com"), None),
        ("Example.COM.", host("example.com"), None),
        ("example.com:443", host("example.com"), Some((443, 443))),
        ("localhost", host("localhost"), None),
        ("my_host-1.example", host("my_host-1.example"), None),
        ("*.example.com", suffix("example.com"), None),
        ("*.Corp.:80-90", suffix("corp"), Some((80, 90))),
        ("*.corp:80-90", suffix("corp"), Some((80, 90))),
        ("example.com:1-65535", host("example.com"), Some((1, 65535))),
        (
            "example.com:065535",
            host("example.com"),
            Some((65535, 65535)),
        ),
    ];
    assert!(!cases.is_empty());
    for (input, pattern, ports) in cases {
        let r = rule(input);
        assert_eq!((&r.pattern, &r.ports), (pattern, ports), "{input}");
    }
}

#[test]
fn refuses_bad_rules() {
    let cases = [
        ("", "empty rule"),
        (":80", "empty pattern"),
        ("10.0.0.0/33", "prefix length above 32"),
        ("10.0.0.0/300", "prefix length above 32"),
        ("fd00::/129", "prefix length above 128"),
        ("[fd00::]/129", "prefix length above 128"),
        ("10.0.0.0/", "bad prefix length \"\""),
        ("10.0.0.0/+8", "bad prefix length \"+8\""),
        ("10.0.0.0/x:80", "bad prefix length \"x\""),
        (
            "10.0.0.300/8",
            "\"10.0.0.300\" before \"/\" is not an ip address",
        ),
        (
            "example.com/8",
            "\"example.com\" before \"/\" is not an ip address",
        ),
        ("[::1", "missing \"]\""),
        (
            "[10.0.0.1]",
            "\"10.0.0.1\" in brackets is not an ipv6 address",
        ),
        (
            "[example.com]:80",
            "\"example.com\" in brackets is not an ipv6 address",
        ),
        ("[::1]22", "expected \":\" after \"]\""),
        ("[::1]:", "empty port after \":\""),
        ("example.com:", "empty port after \":\""),
        ("example.com:0", "port 0 is not allowed"),
        ("example.com:65536", "port 65536 above 65535"),
        ("example.com:99999999999", "port 99999999999 above 65535"),
        ("example.com:+80", "bad port \"+80\""),
        ("example.com:http", "bad port \"http\""),
        ("example.com:80-", "bad port \"\""),
        ("example.com:-80", "bad port \"\""),
        ("example.com:1-2-3", "bad port \"2-3\""),
        (
            "example.com:90-80",
            "port range 90-80 ends before it starts",
        ),
        ("*foo", "a wildcard must be \"*\" alone or a leading \"*.\""),
        (
            "a.*.b",
            "a wildcard must be \"*\" alone or a leading \"*.\"",
        ),
        (
            "*.*.b",
            "a wildcard must be \"*\" alone or a leading \"*.\"",
        ),
        ("**", "a wildcard must be \"*\" alone or a leading \"*.\""),
        ("*.", "empty host name"),
        (".", "empty host name"),
        ("a..b", "empty label in host name"),
        (".example.com", "empty label in host name"),
        ("exa mple.com", "invalid character ' ' in host name"),
        ("foo:bar:80", "invalid character ':' in host name"),
        ("ex/ample", "\"ex\" before \"/\" is not an ip address"),
        ("bücher.de", "invalid character 'ü' in host name"),
        ("10.0.0.256", "not a valid ip address, and not a host name"),
        ("127.1", "not a valid ip address, and not a host name"),
        ("fe80::1%eth0", "bad port \"1%eth0\""),
    ];
    for (input, why) in cases {
        let err = input.parse::<Rule>().unwrap_err().to_string();
        assert_eq!(err, format!("bad rule {input:?}: {why}"));
    }
    let long_label = format!("{}.com", "a".repeat(64));
    assert!(
        long_label
            .parse::<Rule>()
            .unwrap_err()
            .0
            .contains("label longer than 63")
    );
    let long_host = format!("{}com", "abcdefghi.".repeat(26));
    assert!(
        long_host
            .parse::<Rule>()
            .unwrap_err()
            .0
            .contains("longer than 253")
    );
}

#[test]
fn display_is_canonical_and_round_trips() {
    let cases = [
        ("*", "*"),
        ("*:22", "*:22"),
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:22", "[::1]:22"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("10.1.2.3/8:443", "10.0.0.0/8:443"),
        ("fd00::/8", "fd00::/8"),
        ("fd00::/8:443", "[fd00::]/8:443"),
        ("Example.COM.:80-90", "example.com:80-90"),
        ("*.Example.com", "*.example.com"),
        ("a.b:7-7", "a.b:7"),
    ];
    for (input, text) in cases {
        let r = rule(input);
        assert_eq!(r.to_string(), text, "{input}");
        assert_eq!(rule(text), r, "{text} does not round-trip");
    }
}

#[test]
fn matches_name() {
    let cases: &[(&str, &str, u16, bool)] = &[
        ("*", "anything.example", 1, true),
        ("*", "10.0.0.1", 65535, true),
        ("*:22", "host", 22, true),
        ("*:22", "host", 23, false),
        ("example.com", "example.com", 80, true),
        ("example.com", "EXAMPLE.Com", 80, true),
        ("example.com", "example.com.", 80, true),
        ("example.com", "a.example.com", 80, false),
        ("example.com", "example.co", 80, false),
        ("example.com", "xexample.com", 80, false),
        ("example.com:443", "example.com", 443, true),
        ("example.com:443", "example.com", 80, false),
        ("*.example.com", "example.com", 80, true),
        ("*.example.com", "a.example.com", 80, true),
        ("*.example.com", "x.y.Example.COM.", 80, true),
        ("*.example.com", "badexample.com", 80, false),
        ("*.example.com", "example.com.evil", 80, false),
        ("*.example.com", "com", 80, false),
        ("*.corp:80-90", "db.corp", 80, true),
        ("*.corp:80-90", "db.corp", 90, true),
        ("*.corp:80-90", "db.corp", 79, false),
        ("*.corp:80-90", "db.corp", 91, false),
        // IP and CIDR patterns match a name only when it is an IP literal.
        ("10.1.2.3", "10.1.2.3", 80, true),
        ("10.1.2.3", "10.1.2.4", 80, false),
        ("10.0.0.0/8", "10.200.0.1", 80, true),
        ("10.0.0.0/8", "11.0.0.1", 80, false),
        ("10.0.0.0/8", "ten.example", 80, false),
        ("127.0.0.0/8", "localhost", 80, false),
        ("::1", "::1", 80, true),
        ("::1", "[::1]", 80, true),
        ("::1", "[0:0::1]", 80, true),
        ("fd00::/8", "[fd12::1]", 80, true),
        ("fd00::/8", "fe80::1", 80, false),
        // IPv4-mapped literals are their IPv4 address.
        ("127.0.0.0/8", "::ffff:127.0.0.1", 80, true),
        ("127.0.0.0/8", "[::ffff:127.0.0.1]", 80, true),
        ("127.0.0.1", "[::ffff:7f00:1]", 80, true),
        ("::ffff:127.0.0.1", "127.0.0.1", 80, true),
        // Host patterns never match an IP literal.
        ("localhost", "127.0.0.1", 80, false),
    ];
    for &(pattern, host, port, want) in cases {
        assert_eq!(
            rule(pattern).matches_name(host, port),
            want,
            "{pattern} vs {host}:{port}"
        );
    }
}

#[test]
fn matches_addr() {
    let cases: &[(&str, &str, u16, bool)] = &[
        ("*", "10.0.0.1", 80, true),
        ("*", "::1", 80, true),
        ("*:443", "::1", 80, false),
        ("10.1.2.3", "10.1.2.3", 80, true),
        ("10.1.2.3", "10.1.2.4", 80, false),
        ("10.0.0.0/8", "10.255.255.255", 80, true),
        ("10.0.0.0/8", "9.255.255.255", 80, false),
        ("10.0.0.0/8", "11.0.0.0", 80, false),
        ("10.0.0.0/8:443", "10.0.0.1", 443, true),
        ("10.0.0.0/8:443", "10.0.0.1", 444, false),
        ("0.0.0.0/0", "1.2.3.4", 80, true),
        ("0.0.0.0/0", "::1", 80, false),
        ("::/0", "::1", 80, true),
        ("::/0", "1.2.3.4", 80, false),
        ("fd00::/8", "fdff::1", 80, true),
        ("fd00::/8", "fe00::1", 80, false),
        ("::1", "::1", 80, true),
        ("[::1]:22", "::1", 22, true),
        ("[::1]:22", "::1", 23, false),
        // IPv4-mapped addresses are matched as IPv4, from either side.
        ("127.0.0.0/8", "::ffff:127.0.0.1", 80, true),
        ("127.0.0.1", "::ffff:127.0.0.1", 80, true),
        ("::ffff:127.0.0.1", "127.0.0.1", 80, true),
        ("::ffff:127.0.0.0/104", "127.9.9.9", 80, true),
        ("::ffff:127.0.0.0/104", "::ffff:127.9.9.9", 80, true),
        ("10.0.0.0/8", "::ffff:127.0.0.1", 80, false),
        // Host patterns never match an address.
        ("localhost", "127.0.0.1", 80, false),
        ("*.example.com", "93.184.216.34", 80, false),
    ];
    for &(pattern, addr, port, want) in cases {
        assert_eq!(
            rule(pattern).matches_addr(ip(addr), port),
            want,
            "{pattern} vs {addr}:{port}"
        );
    }
}

#[test]
fn no_rules_permit_everything() {
    let r = Rules::default();
    assert!(r.is_empty());
    assert!(r.permits_name("example.com", 80));
    assert!(r.permits_name("127.0.0.1", 22));
    assert!(r.permits_addr("example.com", ip("127.0.0.1"), 22));
    assert!(!rules(&[], &["*"]).is_empty());
    assert!(!rules(&["*"], &[]).is_empty());
}

/// `(host, resolved address, port, permits_name, permits_addr)`
type Check = (&'static str, &'static str, u16, bool, bool);

#[test]
fn permits_name_then_addr() {
    let cases: &[(&[&str], &[&str], &[Check])] = &[
        // Deny on the address catches a name that resolves to loopback; deny on an IP literal
        // already stops the name, in any spelling.
        (
            &[],
            &["127.0.0.0/8"],
            &[
                ("localhost", "127.0.0.1", 80, true, false),
                ("localhost", "::ffff:127.0.0.1", 80, true, false),
                ("127.0.0.1", "127.0.0.1", 80, false, false),
                ("::ffff:127.0.0.1", "::ffff:127.0.0.1", 80, false, false),
                ("[::ffff:7f00:1]", "::ffff:7f00:1", 80, false, false),
                ("example.com", "93.184.216.34", 80, true, true),
            ],
        ),
        (&[], &["::1"], &[("localhost", "::1", 80, true, false)]),
        // Deny on the name.
        (
            &[],
            &["*.internal"],
            &[
                ("db.internal", "10.0.0.5", 80, false, false),
                ("DB.Internal.", "10.0.0.5", 80, false, false),
                ("db.external", "10.0.0.5", 80, true, true),
            ],
        ),
        // Deny on some ports only.
        (
            &[],
            &["*:25"],
            &[
                ("mail.example", "1.2.3.4", 25, false, false),
                ("mail.example", "1.2.3.4", 587, true, true),
            ],
        ),
        // Allow by name: the name decides, whatever it resolves to.
        (
            &["*.corp.example"],
            &[],
            &[
                ("a.corp.example", "10.9.9.9", 443, true, true),
                ("a.corp.example", "127.0.0.1", 443, true, true),
                ("evil.example", "10.9.9.9", 443, true, false),
                ("10.9.9.9", "10.9.9.9", 443, false, false),
            ],
        ),
        // Allow by address: a name must resolve into the range.
        (
            &["10.0.0.0/8"],
            &[],
            &[
                ("db.corp", "10.1.1.1", 5432, true, true),
                ("db.corp", "::ffff:10.1.1.1", 5432, true, true),
                ("db.corp", "192.168.1.1", 5432, true, false),
                ("10.1.1.1", "10.1.1.1", 5432, true, true),
                ("192.168.1.1", "192.168.1.1", 5432, false, false),
            ],
        ),
        // Allow on some ports only.
        (
            &["*:443"],
            &[],
            &[
                ("example.com", "1.2.3.4", 443, true, true),
                ("example.com", "1.2.3.4", 80, true, false),
                ("1.2.3.4", "1.2.3.4", 80, false, false),
            ],
        ),
        // Deny wins over allow, on the name and on the address.
        (
            &["*"],
            &["*"],
            &[("example.com", "1.2.3.4", 80, false, false)],
        ),
        (
            &["*.corp"],
            &["secret.corp"],
            &[
                ("secret.corp", "10.0.0.1", 80, false, false),
                ("public.corp", "10.0.0.1", 80, true, true),
            ],
        ),
        (
            &["*.corp"],
            &["10.0.0.0/8"],
            &[
                ("public.corp", "10.0.0.1", 80, true, false),
                ("public.corp", "172.16.0.1", 80, true, true),
            ],
        ),
        (
            &["10.0.0.0/8"],
            &["10.6.6.0/24"],
            &[
                ("x.corp", "10.6.6.6", 80, true, false),
                ("x.corp", "10.6.7.6", 80, true, true),
            ],
        ),
    ];
    let mut checked = 0;
    for &(allow, deny, checks) in cases {
        let r = rules(allow, deny);
        for &(host, addr, port, name_ok, addr_ok) in checks {
            let what = format!("allow {allow:?} deny {deny:?}: {host} -> {addr}:{port}");
            assert_eq!(r.permits_name(host, port), name_ok, "permits_name, {what}");
            assert_eq!(
                r.permits_addr(host, ip(addr), port),
                addr_ok,
                "permits_addr, {what}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20);
}
