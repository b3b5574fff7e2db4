"""A labelled set of >= 300 lines for measuring PII precision and recall (tests and benchmark).

    from curation.stages.pii.labelled import labelled_lines, score
    lines = labelled_lines()          # [LabelledLine(text, spans)], spans exact (start, end, type)

Lines are written with inline marks, ``[[type|value]]``, which ``labelled_lines`` strips while
recording the span. True cases of each type sit in varied contexts; look-alikes (version strings,
dates, times, ISBNs, hex digests, UUIDs, coordinates, prices, order numbers, Luhn-invalid
card-like numbers, ``@decorator``, private addresses, placeholder tokens ...) carry no mark. A
prediction counts as a true positive only when its start, end and type all equal a mark's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from curation.stages.pii.detect import TYPES, Span

_MARK = re.compile(r"\[\[(\w+)\|(.*?)\]\]", re.DOTALL)

_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
        "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
_PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MmszWLdRfexT\n"
        "x4ZP+ZQcmp4qVZ3hLQ2Wq9d1p2sBbCvwX+E3dVUaiU0CAwEAAQKCAQEAqJ5Rmb1=\n-----END RSA PRIVATE KEY-----")
_PEM_EC = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIbVnDZt5u4dAJzTGQyQm0hGw9yrY0vX1z7Pj6cEJ6p5oAoGCCqGSM49\n-----END EC PRIVATE KEY-----"
_PEM_OPEN = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----"

POSITIVES: dict[str, list[str]] = {
    "email": ["jane.doe@example.org", "john.smith@mail.co.uk", "first+news@sub.domain.io", "ADMIN@EXAMPLE.COM",
              "m_ross42@uni-heidelberg.de", "support@company.com", "li.wei@qq.com", "o'brien@isp.net",
              "x9@startup.ai", "dev-team@lists.apache.org", "anna.k@posteo.de", "rahul.sharma1987@gmail.com",
              "s.tanaka@keio.ac.jp", "noreply@github.com", "maria-jose@correo.es",
              "root@mail.server01.internal.example.com"],
    "ip": ["93.184.216.34", "151.101.1.69", "172.217.16.142", "104.16.132.229", "54.239.28.85", "185.199.108.153",
           "31.13.71.36", "81.2.69.160", "52.94.236.248", "66.249.66.1", "17.253.144.10", "45.33.32.156",
           "2a03:2880:f12f:83:face:b00c:0:25de", "2607:f8b0:4005:80a::200e", "2a00:1450:4001:82b::200e",
           "2620:0:862:ed1a::1", "2001:67c:4e8:f004::9", "2404:6800:4003:c00::64"],
    "phone": ["+44 20 7946 0958", "+1 (212) 555-0147", "(212) 555-0147", "212-555-0147", "212.555.0147",
              "1-800-555-0199", "+49 30 12345678", "+33 6 12 34 56 78", "06 12 34 56 78", "020 7946 0958",
              "030 1234 5678", "+4915112345678", "+91 98765 43210", "+81 3-1234-5678", "(030) 12345678",
              "+61 2 9876 5432", "0171 2345678", "+86 138 0013 8000", "+7 495 123-45-67", "07700 900123",
              "415-555-2671", "+1-202-555-0173", "555-0147", "+353 1 234 5678"],
    "card": ["4111 1111 1111 1111", "4012888888881881", "5555-5555-5555-4444", "5105 1051 0510 5100",
             "3782 822463 10005", "371449635398431", "6011 1111 1111 1117", "6011000990139424",
             "3530 1113 3330 0000", "3566002020360505", "30569309025904", "2223 0031 2200 3222",
             "4222222222222", "6200000000000005", "5425-2334-3010-9903", "4263 9826 4026 9299"],
    "secret": ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "ghp_R2d9Xk3LmQ8vT1zP0aW7yB5nC4eF6gH2jK0s",
               "gho_16C7e42F292c6912E7710c838347Ae178B4a", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
               _JWT, "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
               "xoxp-2210535563-2210535564-4021736155-5b1a5e3c", "ghs_8sKq2Lm9Xw4Pz7Rt1Vb3Nc6Hd0Jf5Gy2Ae1B"],
}

# Sentence frames; each true value appears in two or three of them.
FRAMES: dict[str, list[str]] = {
    "email": ["Contact {} for details.", "Send your CV to {} before Friday.", "From: Jane <{}>",
              "mailto:{}", "Reach me at {}, thanks!", '"email": "{}",', "cc {}; bcc nobody"],
    "ip": ["The server at {} refused the connection.", "Failed login from {} at 03:14.", "ping {}",
           "client_ip={} status=200", "Our old host was {}. It moved last year.", "GET / HTTP/1.1 from [{}]"],
    "phone": ["Call us on {} during office hours.", "Tel: {}", "Phone {} (mobile)", "ring me at {}!",
              "Fax: {} / no calls after 6", "Emergency contact: {}."],
    "card": ["Card number: {} exp 12/27", "I paid with {} yesterday.", "cc={}&cvv=123", "Charge {} for the order."],
    "secret": ["export AWS_ACCESS_KEY_ID={}", "token = '{}'", "Use {} to authenticate.", "SLACK={}",
               "key: {}"],
}

# Lines with marks written by hand: several types at once, tokens in code, bearer headers, PEM blocks.
HANDWRITTEN = [
    "Jane ([[email|jane@acme-corp.com]], [[phone|+1 415-555-0132]]) logged in from [[ip|81.2.69.142]].",
    "Authorization: Bearer [[secret|" + _JWT + "]]",
    "curl -H 'Authorization: Bearer [[secret|9f8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c]]' https://api.example.com",
    "headers = {'Authorization': 'Bearer [[secret|ya29.a0AfH6SMBx3kq9PzL0vT7wYc2Rn8uE4jD1]]'}",
    "[[secret|" + _PEM + "]]\nThat key must never be committed.",
    "id_ecdsa:\n[[secret|" + _PEM_EC + "]]",
    "[[secret|" + _PEM_OPEN + "]]",
    "aws_secret_access_key = [[secret|wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY]]",
    "AWS_SECRET_ACCESS_KEY: [[secret|je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY]]",
    "[default]\naws_access_key_id = [[secret|AKIAI44QH8DHBEXAMPLE]]\nregion = eu-west-1",
    "git remote set-url origin https://[[secret|ghp_Zq8Rt5Vw2Xy4Ab6Cd8Ef0Gh2Ij4Kl6Mn8Op0Q]]@github.com/org/repo",
    "Write to [[email|editor@journal.org]] or call [[phone|+44 161 496 0753]].",
    "Order 48213 shipped to [[email|k.mueller@web.de]], card ending 4242.",
    "Paid with [[card|4242 4242 4242 4242]], receipt sent to [[email|buyer@shop.example.com]].",
    "Visitor [[ip|2a02:c7f:7e0e:1a00::5]] and visitor [[ip|86.12.44.201]] both saw the page.",
    "Hi, I'm Tom: [[phone|07700 900461]] / [[email|tom@tomsbikes.co.uk]]",
    "reply-to: <[[email|alerts+prod@monitoring.io]]>",
    "The JWT [[secret|" + _JWT + "]] expired.",
    "SLACK_BOT_TOKEN=[[secret|xoxb-998877665544-1122334455667-ZyXwVuTsRqPoNmLkJiHgFeDc]]",
    ("GITHUB_TOKEN: [[secret|github_pat_11ABCDEFG0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
     "abcdefghijklmnopqrstuvwxyzABCDE]]"),
    "Server log: [[ip|185.60.216.35]] - - [15/Jan/2024:10:22:01 +0000] \"GET /index.html\"",
    "He gave me his number, [[phone|(646) 555-0190]], and his e-mail, [[email|dan_r@outlook.com]].",
    "Donations: [[card|5105-1051-0510-5100]] (test card)",
    "Kontakt: [[phone|+49 (0)89 1234567]] oder [[email|info@beispiel.de]]",
    "Ligue para [[phone|+55 11 91234-5678]] ou escreva para [[email|contato@empresa.com.br]].",
    "tel. [[phone|+39 06 6988 3145]] fax [[phone|+39 06 6988 5373]]",
    "Login from [[ip|2606:2800:220:1:248:1893:25c8:1946]] (US)",
    "mysql -h [[ip|52.14.88.9]] -u admin -p",
    "amex [[card|3714 496353 98431]] belongs to the company account",
    "const stripe = require('stripe')('[[secret|sk_live_51H8xYzAbCdEfGhIjKlMnOpQr]]');",
]

# Look-alikes: no mark, nothing should be found.
LOOKALIKES = [
    # versions and dotted numbers
    "Upgrade to v1.2.3.4 before the release.", "Tested with version 2.0.1.3 and 2.0.1.4.", "OID 1.3.6.1.4.1.311",
    "The sequence 1.2.3.4.5 continues forever.", "Release 10.4.2.1 fixes the crash.", "build 6.1.7601.17514",
    "Firmware 3.10.2.254 is out.", "See section 4.2.1.3 of the standard.", "python 3.11.4.1 is not a real release",
    "numpy==1.26.4 pandas==2.2.1", "Chrome/120.0.6099.109 Safari/537.36", "semver 1.0.0-alpha.1+build.5",
    "java version 17.0.9.1", "Kernel 5.15.0.91 generic", "Windows 10.0.19045.3803",
    # found by pii_v1 on the bundled sample while it was written; the last two are still reported
    "brotlicffi >= 1.2.1.0 is required", "(rfc5890.html#section-2.3.2.4)", "Clause 252.227-7013 (c) (1)",
    "2.6.2.2 (2023-08-14)\n- Fix the build", 'spec sections "8.2.4.44 Bogus comment" and "8.2.4.45 Markup"',
    # private / reserved / well-known addresses (not personal data)
    "Router admin page: 192.168.1.1", "Bind to 127.0.0.1:8080 locally.", "Set the gateway to 10.0.0.1.",
    "docker network 172.17.0.2", "fe80::1ff:fe23:4567:890a%eth0 is link-local", "listen [::1]:443",
    "Example address 203.0.113.7 (documentation range).", "2001:db8::ff00:42:8329 is the doc prefix.",
    "Public DNS: 8.8.8.8 and 1.1.1.1", "0.0.0.0 means all interfaces", "255.255.255.0 is the netmask",
    "the ISP uses 100.64.0.1 for CGNAT", "multicast 224.0.0.251 for mDNS",
    # times, MACs, C++ scopes, IPv6-ish strings
    "The train leaves at 12:30:45.", "MAC 00:1A:2B:3C:4D:5E", "std::vector<int>::iterator it;",
    "dead::beef is not a host", "a::b::c", "ratio 16:9:4", "Timestamp 2024-01-15T10:22:01+00:00",
    # dates and numbers with separators
    "Born on 2024-01-15.", "Due 15/01/2024.", "Meeting on 01-15-2024 at noon.", "Dated 15.01.2024.",
    "Period 2023-12-01 to 2024-02-29", "Year range 1999-2004-2010", "Invoice 2024-00017-3",
    "ISBN 978-3-16-148410-0", "ISBN-13: 9783161484100", "ISBN 0-306-40615-2", "978-0-306-40615-7 is a book",
    "ISSN 0317-8471", "DOI 10.1000/182", "arXiv:2401.12345", "PMID 31452104",
    "Order #100-200-3000 confirmed", "Order 4829-3817-2291", "Reference 12345678901", "ZIP 94103-1234",
    "SKU 0012-3456", "Account no. 00012345", "Ticket 2024-5567-8890", "Case ID 123-456-7890-12",
    "Population: 8 336 817", "1 234 567 890 stars", "Score 1-0-1-1-0",
    # prices, coordinates, maths
    "Price $1,299.99 (was $1,499.00)", "EUR 2.499,00", "Coordinates 48.8584, 2.2945", "lat=51.5072 lon=-0.1276",
    "pi = 3.14159265358979", "x = 1e-10 + 2.5e+3", "Temperature went from -5 to +12 C", "+/- 0.05 tolerance",
    "Ratio 3:2:1", "Scale 1:25000",
    # card-like numbers
    "4111 1111 1111 1112 fails the check digit.", "Card 1234 5678 9012 3456 (fake)", "7000 1234 5678 9012",
    "IMEI 490154203237518", "Timestamp 1700000000000 ms", "tracking 9400 1000 0000 0000 0000 00",
    "Serial 5555 5555 5555 5555 is Luhn-invalid", "Barcode 4006381333931", "ID 3000 0000 0000 00 x",
    # hashes, uuids, encodings
    "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "md5 d41d8cd98f00b204e9800998ecf8427e", "commit 1f9a611d6040b0a3c5796c4e0e218aa1dc462b00",
    "UUID 123e4567-e89b-12d3-a456-426614174000", "git checkout c5796c4",
    ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAA"
     "BJRU5ErkJggg=="),
    "AKIA is the prefix of AWS key ids.", "AKIAXXXXXXXX placeholder", "Use ghp_xxxxxxxx as a placeholder.",
    "Bearer token authentication is described in RFC 6750.", "Authorization: Bearer <token>",
    "Authorization: Bearer YOUR_ACCESS_TOKEN_HERE", "curl -H \"Authorization: Bearer $ACCESS_TOKEN\"",
    "the bearer of this letter is my friend",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
    "xox is how kids sign letters", "sk_test_4eC39HqLyjWDarjtT1zdp7dc is a test key",
    "eyJ alone is just the start of base64 JSON",
    # e-mail look-alikes
    "@property\ndef name(self): ...", "Use @dataclass(frozen=True) here.", "user@ is not an address",
    "See icon@2x.png and logo@3x.jpg", "npm install lodash@4.17.21", "pip install pkg@git+https://host/x",
    "@media screen and (max-width: 600px)", "ping me @here", "meet @ 5pm", "admin@localhost",
    "name [at] domain [dot] com", "git@github.com:org/repo.git", "foo@bar", "Follow @jack and @nasa",
    "x@y.z is too short", "@Override public String toString()", "decorator: @app.route('/')",
    "user@example", "first.last@", "@scope/package@1.2.0",
]

# Look-alikes placed in every frame of one type, so each type's contexts also carry negatives.
FRAMED_LOOKALIKES: dict[str, list[str]] = {
    "email": ["@decorator", "user@", "icon@2x.png", "lodash@4.17.21"],
    "ip": ["v1.2.3.4", "1.2.3.4.5", "192.168.0.10", "10.1.2.3"],
    "phone": ["2024-01-15", "978-3-16-148410-0", "12345678901", "555-123"],
    "card": ["4111 1111 1111 1112", "1234567812345678", "9783161484100"],
    "secret": ["da39a3ee5e6b4b0d3255bfef95601890afd80709", "123e4567-e89b-12d3-a456-426614174000",
               "AKIA_EXAMPLE", "<your-token>"],
}


@dataclass(frozen=True)
class LabelledLine:
    """One line of the set and the spans a perfect detector would report."""

    text: str
    spans: tuple[Span, ...]


def parse(marked: str) -> LabelledLine:
    """Strip ``[[type|value]]`` marks, recording each value's span."""
    out, spans, pos = [], [], 0
    for m in _MARK.finditer(marked):
        out.append(marked[pos:m.start()])
        start = sum(len(p) for p in out)
        kind, value = m.group(1), m.group(2)
        if kind not in TYPES:
            raise ValueError(f"labelled line {marked!r}: unknown type {kind!r}")
        out.append(value)
        spans.append(Span(start, start + len(value), kind))
        pos = m.end()
    out.append(marked[pos:])
    return LabelledLine("".join(out), tuple(spans))


def marked_lines() -> list[str]:
    lines = list(HANDWRITTEN)
    for kind, values in POSITIVES.items():
        frames = FRAMES[kind]
        for i, value in enumerate(values):
            for k in (0, 3, 5) if kind != "secret" else (0, 2, 3, 4):
                lines.append(frames[(i + k) % len(frames)].format(f"[[{kind}|{value}]]"))
    lines += LOOKALIKES
    for kind, fakes in FRAMED_LOOKALIKES.items():
        lines += [frame.format(fake) for frame in FRAMES[kind] for fake in fakes[:2]] + \
                 [FRAMES[kind][i % len(FRAMES[kind])].format(fake) for i, fake in enumerate(fakes[2:])]
    return list(dict.fromkeys(lines))  # a frame may repeat a line; count it once


def labelled_lines() -> list[LabelledLine]:
    return [parse(m) for m in marked_lines()]


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score(find: Callable[[str], Iterable[Span]], lines: list[LabelledLine],
          types: Iterable[str] = TYPES) -> dict[str, Counts]:
    """Exact-span counts per type and ``"all"``: a prediction is a true positive when a mark has
    the same start, end and type; the other predictions are false positives, unmatched marks false negatives."""
    types = tuple(types)
    counts = {t: Counts() for t in (*types, "all")}
    for line in lines:
        gold = {s for s in line.spans if s.type in types}
        pred = {Span(*s) for s in find(line.text) if s[2] in types}
        for s in pred:
            c = counts[s.type]
            if s in gold:
                c.tp += 1
            else:
                c.fp += 1
        for s in gold - pred:
            counts[s.type].fn += 1
    for t in types:
        for f in ("tp", "fp", "fn"):
            setattr(counts["all"], f, getattr(counts["all"], f) + getattr(counts[t], f))
    return counts
