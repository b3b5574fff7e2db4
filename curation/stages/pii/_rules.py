"""One finder per PII type: a compiled candidate regex plus a validator that rejects look-alikes.

Each finder yields ``(start, end)`` character spans in the text. The rules (documented in
``docs/pii.md``) are written so that a candidate is judged by its own structure and the token it
sits in: an address glued to a longer dotted sequence, a number inside a longer number, or a
word such as ``version`` right before a dotted quad all disqualify it.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterator

Spans = Iterator[tuple[int, int]]

# --- e-mail ---------------------------------------------------------------------------------
# Local part without leading dot (an inner apostrophe as in o'brien is allowed); domain labels;
# an alphabetic TLD of >= 2 letters (so that
# ``pkg@1.2.3`` or ``user@localhost`` are not e-mails). Preceded by no e-mail character, so a
# ``@decorator`` or ``user@`` never matches.
_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9_%+\-](?:[A-Za-z0-9._%+'\-]{0,63}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w\-]|\.[A-Za-z0-9]|:[\w~/])")
# ``git@github.com:org/repo`` (an SSH login, not a mailbox) is excluded by the ``:path`` look-ahead.
# ``icon@2x.png``: retina-image and other file names look like addresses; their "TLD" is an extension.
_FILE_EXT = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "avif",
                       "js", "css", "py", "json", "txt", "md", "html", "ts", "tsx", "jsx"})


def find_emails(text: str) -> Spans:
    if "@" not in text:  # cheap pre-check: most documents have no '@'
        return
    for m in _EMAIL.finditer(text):
        if m.group(1).lower() not in _FILE_EXT:
            yield m.span()


# --- IP addresses -----------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# (``(?=\d)`` first: a cheap first-character test before the look-behind, about 2x faster.)
# Not glued to a word or a dot on the left, nor followed by a word character or ``.digit``:
# so 1.2.3.4.5, v1.2.3.4 and 10.0.0.1a are not addresses; a sentence-final dot is fine.
_IPV4 = re.compile(rf"(?=\d)(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
# A word that makes a dotted quad a version number when it comes right before it, possibly with
# "to"/"for" and one more word between: "Standards-Version: 3.6.2.1", "Bump Standards-Version to
# 4.6.1.0", "Policy 4.6.1.0", "release notes for 1.7.5.2", "OID 1.3.101.110"; or a verb of
# packaging with one name between: "Require inputproto 1.9.99.10", "upgrade V8 to 4.5.103.24",
# "Bump to 1.0.99.2".
_VERSION_WORD = re.compile(
    r"(?i)(?:(?:[<>!~=]=|[<>^~]"  # comparison: ">= 1.2.1.0", "==2.0.1.3", "=== '1.2.3.4'"
    r"|(?:\bv|\bver|\bversions?|\breleases?|\brel|\bbuild|\brevision|\brev|\bfirmware|\bkernel|\bpython|"
    r"\bjava|\bnode|\bupdate|\bpatch|\bsections?|\bsec|\bchapter|\bclause|\bstep|\bfigure|\bfig|\btable|"
    r"\bpart|\bpolicy|\bstandards|\boid)\b\.?|§)"
    r"[\s:=#\-\"'(]*(?:(?:[\w-]+\s+)?(?:to|for)\s+)?"
    r"|\b(?:bump(?:s|ed)?|upgrad(?:e|es|ed|ing)|updated|requires?|required)\s+"
    r"(?:(?:to|from)\s+)?(?:[\w+-]+\s+)?(?:(?:to|from)\s+)?)$")
# The token right before an opening parenthesis: "debianutils (4.8.6.2)" is a package and its
# version; "example.com (93.184.216.34)" is a host name and its address (it ends in a TLD).
_PAREN_NAME = re.compile(r"(?i)(?:^|[\s(\[])([a-z0-9][a-z0-9+.\-]*)\s*\(\s*(?:\d{1,2}:)?$")
_HOSTLIKE = re.compile(r"(?i)\.[a-z]{2,}$|^localhost$")
# After the number: a Debian revision, a tilde or plus suffix or a release-candidate tag
# ("1.2.1.2-2", "4.1.4.2+svn3283", "1.3.0.1-motley") make it a version; "-10.0.0.255" is a range.
_VERSION_SUFFIX = re.compile(r"[-~+][0-9A-Za-z]")
_RANGE_TAIL = re.compile(r"-\d{1,3}(?:\.\d{1,3}){3}")
# A heading number at the start of a line ("2.2.1.1. Unix platforms"): followed by a capitalised word.
_EPOCH = re.compile(r"(?<![\w:.])\d{1,2}:$")
_HEADING_TAIL = re.compile(r"\.?[ \t]+[A-Z][a-z]")


def _version_context(text: str, start: int, end: int) -> bool:
    """True when the dotted quad at ``text[start:end]`` reads as a version, section or object
    number rather than an address, judged by the text around it (rules in docs/pii.md)."""
    if _VERSION_WORD.search(text, max(0, start - 40), start):
        return True
    before = text[max(0, start - 3):start]
    # Glued to a name ("zlib-1.2.8.1", "Policy_0.12.0.0", roff's "openjdk\-1.8.0.121").
    if re.search(r"[A-Za-z]\\?[-_]$", before):
        return True
    # After a Debian epoch ("2:1.2.99.4-1"); "80:162.222.181.197:80" is port:address:port.
    if _EPOCH.search(text, max(0, start - 3), start) and not text.startswith(":", end):
        return True
    if _VERSION_SUFFIX.match(text, end) and not _RANGE_TAIL.match(text, end):
        return True
    pm = _PAREN_NAME.search(text, max(0, start - 60), start)
    if pm and not _HOSTLIKE.search(pm.group(1)):
        return True
    line_start = text.rfind("\n", 0, start) + 1
    return not text[line_start:start].strip() and _HEADING_TAIL.match(text, end) is not None


_RUNS = ("0123456789", "9876543210")


def _placeholder_quad(quad: str) -> bool:
    """A made-up example address: every number a repeated digit ("11.22.33.44", "222.111.111.222",
    "123.123.123.123" has equal numbers) or the digits a straight run ("123.45.67.89",
    "1.234.56.78", "98.76.54.32"). About 4 in 100,000 random public addresses look like this."""
    parts = quad.split(".")
    if len(set(parts)) == 1 or all(len(set(p)) == 1 for p in parts):
        return True
    digits = "".join(parts)
    return len(digits) >= 6 and any(digits in run for run in _RUNS)


def _small_quad(quad: str) -> bool:
    """All four numbers below 32: "3.9.8.0", "2.5.4.3", "1.2.3.4", "4.6.1.0". Versions, section
    numbers, OIDs and made-up examples look like this; of random public addresses only
    (32/256)^4 = 0.02% do, and the public resolvers among them (8.8.8.8, 1.1.1.1) identify no one."""
    return all(int(p) < 32 for p in quad.split("."))


# IPv6 candidate: hex groups with at least two colons, optionally an embedded IPv4 tail and a
# zone id; ``ipaddress`` then decides if it is really an address.
_IPV6 = re.compile(r"(?=[0-9A-Fa-f:])(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?:\.\d{1,3}){0,3}(?:%[0-9A-Za-z]+)?(?![\w:]|\.\d)")
_IPV6_GLOBAL = ipaddress.ip_network("2000::/3")  # global unicast: the only space handed to users


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped.is_global
        return addr.is_global and not addr.is_multicast and addr in _IPV6_GLOBAL
    return addr.is_global and not addr.is_multicast


def find_ips(text: str, public_only: bool = True, keep: frozenset[str] = frozenset()) -> Spans:
    """IPv4 and IPv6 addresses; with ``public_only`` private, loopback, documentation and other
    reserved ranges are left alone (they identify no one), and so is anything in ``keep``."""
    if "." in text:
        for m in _IPV4.finditer(text):
            quad = m.group(0)
            if _small_quad(quad) or _placeholder_quad(quad) or _version_context(text, m.start(), m.end()):
                continue
            if quad in keep or (public_only and not _is_public(ipaddress.IPv4Address(quad))):
                continue
            yield m.span()
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            cand = m.group(0)
            try:
                addr = ipaddress.IPv6Address(cand.split("%", 1)[0])
            except ValueError:
                continue
            if cand in keep or str(addr) in keep or (public_only and not _is_public(addr)):
                continue
            yield m.span()


# --- phone numbers ---------------------------------------------------------------------------
_SEP = r"[ .\-\u00a0]"
_PHONE = re.compile(
    # Not the tail of a longer grouped number, nor a "+" inside a version ("1:10~+20191229111838").
    r"(?=[+(\d])(?<![\w.+\-/#=~])(?<!\d[ \-])(?:"
    rf"\+[1-9]\d{{0,2}}{_SEP}?(?:\(0?\d{{1,4}}\){_SEP}?)?\d{{1,5}}(?:{_SEP}\d{{1,8}}){{1,5}}"  # +44 20 7946 0958
    r"|\+[1-9]\d{9,14}"  # E.164 written without separators: +4915112345678 (country codes never start with 0)
    rf"|(?:1{_SEP})?\(?[2-9]\d\d\)?{_SEP}?[2-9]\d\d[ .\-]\d{{4}}"  # NANP: (212) 555-0147, 1-800-555-0199
    rf"|\(0\d{{1,4}}\){_SEP}?\d{{2,8}}(?:{_SEP}\d{{2,8}}){{0,3}}"  # (030) 1234 5678
    rf"|0\d{{1,4}}(?:{_SEP}\d{{2,8}}){{1,4}}"  # national trunk 0: 020 7946 0958, 06 12 34 56 78
    # Digit-run boundary: not followed by a word, ".5", "-5", "+" (version suffix) or one more
    # group of digits ("571 612 1056 1214", "00 00 00 00 00 00": lists, tables and hex dumps).
    r")(?!\w|[.\-]\d|\+\w|[ \u00a0]\d)")
_ISBN_PREFIX = re.compile(r"(?i)isbn(?:-1[03])?:?\s*$")
# A US state (two-letter postal abbreviation) right before a ZIP+4 code, perhaps with a comma and
# a line break with a comment leader between: "Boston, MA 02110-1301", "Boston, MA\n.\\" 02111-1307".
_US_STATE = re.compile(
    r"\b(?:A[KLRSZ]|C[AOT]|D[CE]|FL|G[AU]|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|P[AR]|RI|"
    r"S[CD]|T[NX]|UT|V[AIT]|W[AIVY])\.?,?[ \t]*(?:\r?\n[ \t]*(?:\.\\\"|\\\"|#|//|\*|;|--|dnl)?[ \t]*)?$")
_ZIP4 = re.compile(r"\d{5}-\d{4}")


def _timestamp_digits(plain: str) -> bool:
    """YYYYMMDD[hhmm[ss]] with a plausible year, month and day: "20191229111838" is a snapshot
    time inside a version string, not an E.164 number."""
    if len(plain) not in (8, 12, 14) or plain[:2] not in ("19", "20"):
        return False
    month, day = int(plain[4:6]), int(plain[6:8])
    return 1 <= month <= 12 and 1 <= day <= 31


def _counting_groups(s: str) -> bool:
    """Groups that count up or down by one ("01 02 03 04 05"): a sequence, not a number."""
    groups = [int(g) for g in re.findall(r"\d+", s)]
    diffs = {b - a for a, b in itertools.pairwise(groups)}
    return len(groups) >= 4 and diffs in ({1}, {-1})


def find_phones(text: str) -> Spans:
    """Numbers with phone structure: a ``+`` country code, the North American 3-3-4 layout
    (area code and exchange 2-9), or a national trunk ``0`` followed by separated groups.

    Digits must number 8-15 with ``+`` (10-15 without separators), 10-11 for the North American
    layout and 9-12 for the trunk-0 layout, which rules out dates (8 digits at most), times and
    short codes; parentheses must balance; a 13-digit 978/979 run or one right after ``ISBN`` is
    a book number; a ZIP+4 code after a US state is a postal code; a ``+`` number whose digits
    are a date and time is a timestamp; groups counting by one or starting ``000`` are not
    numbers anyone dials.
    """
    for m in _PHONE.finditer(text):
        s = m.group(0)
        digits = sum(c.isdigit() for c in s)
        if s.count("(") != s.count(")"):
            continue
        if s[0] == "+":
            ok = 8 <= digits <= 15
        elif s[0] == "0" or s.startswith("(0"):
            ok = 9 <= digits <= 12
        else:  # North American layout: one kind of separator unless the area code has parentheses
            ok = digits in (10, 11) and ("(" in s or len(set(re.sub(r"\d", "", s))) == 1)
        if not ok or _ISBN_PREFIX.search(text, max(0, m.start() - 12), m.start()):
            continue
        plain = re.sub(r"\D", "", s)
        if len(plain) == 13 and plain[:3] in ("978", "979") and s[0] != "+":
            continue
        if _ZIP4.fullmatch(s) and _US_STATE.search(text, max(0, m.start() - 24), m.start()):
            continue
        if (s[0] == "+" and _timestamp_digits(plain)) or plain.startswith("000") or _counting_groups(s):
            continue
        yield m.span()


# --- payment cards ---------------------------------------------------------------------------
_CARD = re.compile(r"(?=\d)(?<![\w.\-+])\d(?:[ \-]?\d){12,18}(?!\w|[.\-]\d)")
# Issuer prefixes (IIN ranges) of the large networks, with their lengths.
_IIN = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa 13/16/19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard 16
    r"|3[47]\d{13}"  # American Express 15
    r"|(?:6011|65\d{2}|64[4-9]\d)\d{12,15}"  # Discover 16-19
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB 16-19
    r"|3(?:0[0-5]|[689]\d)\d{11,16}"  # Diners Club 14-19
    r"|62\d{14,17})$")  # UnionPay 16-19


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_cards(text: str) -> Spans:
    """13-19 digits, optionally in groups separated by one kind of separator (space or dash),
    with a known issuer prefix and a valid Luhn check digit."""
    for m in _CARD.finditer(text):
        s = m.group(0)
        if " " in s and "-" in s:
            continue
        # A grouped number that goes on with another 4-digit group is some longer identifier.
        sep = " " if " " in s else "-" if "-" in s else ""
        if sep and text.startswith(sep, m.end()) and text[m.end() + 1:m.end() + 5].isdigit():
            continue
        digits = s.replace(" ", "").replace("-", "")
        if _IIN.match(digits) and luhn_ok(digits):
            yield m.span()


# --- secrets ---------------------------------------------------------------------------------
_SECRET = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
    r"|(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])"  # GitHub tokens
    r"|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{50,255}"  # GitHub fine-grained PAT
    r"|(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9\-]{10,250}"  # Slack tokens
    r"|(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r"|(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])"  # Google API key
    r"|(?<![A-Za-z0-9])[sr]k_live_[0-9A-Za-z]{20,99}")  # Stripe live keys
# Group 1 is the credential; the scheme word and the key name stay readable.
_BEARER = re.compile(r"(?i:\bbearer)\s+([A-Za-z0-9\-._~+/]{20,}=*)(?![A-Za-z0-9\-._~+/=])")
_AWS_SECRET = re.compile(r"(?i:aws_secret_access_key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
                         r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])")
_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----")
_PEM_BODY_LINE = re.compile(r"[ \t]*(?:[A-Za-z0-9+/=]{8,}|[A-Za-z\-]+: .*)?[ \t]*\r?\n")
# One scan for any trace of a secret; most documents have none and skip the finders below.
_HINT = re.compile(r"AKIA|ASIA|gh[pousr]_|github_pat_|xox[abposr]-|eyJ|AIza|k_live_|[Bb]earer|BEARER|"
                   r"ccess_?[Kk]ey|CCESS_?KEY|-----BEGIN")


def find_secrets(text: str) -> Spans:
    """Cloud and service credentials by their published formats, whole PEM private-key blocks,
    bearer credentials (``Bearer <token>``: the token, >= 20 characters with a digit) and
    40-character AWS secret keys after their key name. Hex digests match none of these."""
    if not _HINT.search(text):
        return
    for m in _SECRET.finditer(text):
        yield m.span()
    for m in _BEARER.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            yield m.span(1)
    for m in _AWS_SECRET.finditer(text):
        yield m.span(1)
    for m in _PEM_BEGIN.finditer(text):
        end_marker = f"-----END {m.group(1)}PRIVATE KEY{m.group(2) or ''}-----"
        end = text.find(end_marker, m.end())
        if end >= 0:
            yield m.start(), end + len(end_marker)
            continue
        # A truncated block: take the base64 body lines that follow, and no more.
        pos = m.end()
        if text.startswith("\n", pos):
            pos += 1
        while (b := _PEM_BODY_LINE.match(text, pos)) and b.end() > pos and b.group(0).strip():
            pos = b.end()
        yield m.start(), pos
