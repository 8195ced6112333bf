"""Table-driven tests of the sans-I/O SMTP observer (h11 style).

Each case is a script of (direction, bytes) steps in time order and the events expected,
written compactly:  ("C", verb, argument) command · ("R", code, answers, enhanced) reply ·
("G", code) greeting · ("B", kind, size) message body · ("TLS",) STARTTLS accepted ·
("U", user) AUTH user name · ("W", name) weird. Every case is also replayed with each step
cut into single bytes, and with random cuts (hypothesis): the events must not change.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.protocols.smtp import (
    REDACTED,
    AuthUser,
    Command,
    MessageBody,
    Reply,
    SmtpConversation,
    StartTls,
    Weird,
    enhanced_code,
)

C, S = True, False

GREETING = (S, b"220 mx.example.com ESMTP ready\r\n")
EHLO = (C, b"EHLO client.example.org\r\n")
EHLO_REPLY = (S, b"250-mx.example.com Hello [192.0.2.1]\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n")


def simplify(events):
    out = []
    for ev in events:
        if isinstance(ev, Command):
            out.append(("C", ev.verb, ev.argument))
        elif isinstance(ev, Reply):
            out.append(("G", ev.code) if ev.greeting else ("R", ev.code, ev.command, ev.enhanced))
        elif isinstance(ev, MessageBody):
            out.append(("B", ev.kind, ev.size))
        elif isinstance(ev, StartTls):
            out.append(("TLS",))
        elif isinstance(ev, AuthUser):
            out.append(("U", ev.user))
        elif isinstance(ev, Weird):
            out.append(("W", ev.name))
    return out


def run(script, reveal=False, chunker=None, finish=True):
    conv = SmtpConversation(reveal_username=reveal)
    events = []
    for ts, (direction, data) in enumerate(script):
        pieces = chunker(data) if chunker else [data]
        for piece in pieces:
            events += conv.receive(direction, piece, ts)
    if finish:
        events += conv.end_of_stream(S, len(script))
        events += conv.end_of_stream(C, len(script))
    return conv, simplify(events)


CASES = [
    (
        "plain session with DATA",
        [GREETING, EHLO, EHLO_REPLY, (C, b"MAIL FROM:<a@example.org>\r\n"), (S, b"250 2.1.0 Sender OK\r\n"),
         (C, b"RCPT TO:<b@example.com>\r\n"), (S, b"250 2.1.5 Recipient OK\r\n"), (C, b"DATA\r\n"),
         (S, b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"),
         (C, b"Subject: hi\r\n\r\nMAIL FROM:<not@a.command>\r\n..leading dot\r\n.\r\n"),
         (S, b"250 2.6.0 Queued mail for delivery\r\n"), (C, b"QUIT\r\n"), (S, b"221 2.0.0 Service closing\r\n")],
        [("G", 220), ("C", "EHLO", "client.example.org"), ("R", 250, "EHLO", None),
         ("C", "MAIL", "FROM:<a@example.org>"), ("R", 250, "MAIL", "2.1.0"),
         ("C", "RCPT", "TO:<b@example.com>"), ("R", 250, "RCPT", "2.1.5"), ("C", "DATA", ""), ("R", 354, "DATA", None),
         ("B", "data", 57), ("R", 250, ".", "2.6.0"), ("C", "QUIT", ""), ("R", 221, "QUIT", "2.0.0")],
    ),
    (
        "pipelined MAIL/RCPT/RCPT/DATA, replies in one segment",
        [GREETING, EHLO, EHLO_REPLY,
         (C, b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\nDATA\r\n"),
         (S, b"250 2.1.0 OK\r\n550 5.1.1 no such user\r\n250 2.1.5 OK\r\n354 go ahead\r\n"),
         (C, b"body\r\n.\r\n"), (S, b"250 OK\r\n")],
        [("G", 220), ("C", "EHLO", "client.example.org"), ("R", 250, "EHLO", None),
         ("C", "MAIL", "FROM:<a@x.org>"), ("C", "RCPT", "TO:<b@y.org>"), ("C", "RCPT", "TO:<c@y.org>"), ("C", "DATA", ""),
         ("R", 250, "MAIL", "2.1.0"), ("R", 550, "RCPT", "5.1.1"), ("R", 250, "RCPT", "2.1.5"), ("R", 354, "DATA", None),
         ("B", "data", 6), ("R", 250, ".", None)],
    ),
    (
        "DATA refused: the client's next line is a command, not a body",
        [GREETING, (C, b"HELO me\r\n"), (S, b"250 hi\r\n"), (C, b"DATA\r\n"), (S, b"554 5.5.1 No valid recipients\r\n"),
         (C, b"QUIT\r\n"), (S, b"221 bye\r\n")],
        [("G", 220), ("C", "HELO", "me"), ("R", 250, "HELO", None), ("C", "DATA", ""), ("R", 554, "DATA", "5.5.1"),
         ("C", "QUIT", ""), ("R", 221, "QUIT", None)],
    ),
    (
        "BDAT chunks (CHUNKING): binary bytes are data, not commands",
        [GREETING, EHLO, EHLO_REPLY, (C, b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n"), (S, b"250 OK\r\n250 OK\r\n"),
         (C, b"BDAT 10\r\nQUIT\r\n\x00\x01\x02\x03"), (S, b"250 2.6.0 CHUNK received OK, 10 octets\r\n"),
         (C, b"BDAT 6 LAST\r\nRSET\r\n"), (S, b"250 2.6.0 Queued\r\n"), (C, b"QUIT\r\n"), (S, b"221 bye\r\n")],
        [("G", 220), ("C", "EHLO", "client.example.org"), ("R", 250, "EHLO", None),
         ("C", "MAIL", "FROM:<a@x.org>"), ("C", "RCPT", "TO:<b@y.org>"), ("R", 250, "MAIL", None), ("R", 250, "RCPT", None),
         ("C", "BDAT", "10"), ("B", "bdat", 10), ("R", 250, "BDAT", "2.6.0"),
         ("C", "BDAT", "6 LAST"), ("B", "bdat", 6), ("R", 250, "BDAT", "2.6.0"), ("C", "QUIT", ""), ("R", 221, "QUIT", None)],
    ),
    (
        "BDAT with an unknown parameter is refused: no chunk follows",
        [GREETING, (C, b"BDAT 1234 SCRAMBLE\r\n"), (S, b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"), (C, b"QUIT\r\n")],
        [("G", 220), ("C", "BDAT", "1234 SCRAMBLE"), ("W", "smtp_invalid_bdat_command"), ("R", 521, "BDAT", "5.5.4"), ("C", "QUIT", "")],
    ),
    (
        "BDAT 0 LAST",
        [GREETING, (C, b"BDAT 0 LAST\r\n"), (S, b"250 OK\r\n")],
        [("G", 220), ("C", "BDAT", "0 LAST"), ("B", "bdat", 0), ("R", 250, "BDAT", None)],
    ),
    (
        "invalid BDAT size stays in command mode",
        [GREETING, (C, b"BDAT -5\r\nNOOP\r\n"), (S, b"501 5.5.4 bad size\r\n250 OK\r\n")],
        [("G", 220), ("C", "BDAT", "-5"), ("W", "smtp_invalid_bdat_command"), ("C", "NOOP", ""),
         ("R", 501, "BDAT", "5.5.4"), ("R", 250, "NOOP", None)],
    ),
    (
        "AUTH LOGIN: credentials are redacted, never decoded by default",
        [GREETING, EHLO, EHLO_REPLY, (C, b"AUTH LOGIN\r\n"), (S, b"334 VXNlcm5hbWU6\r\n"),
         (C, b"cHJpbnRlckBjb250b3NvLmNvbQ==\r\n"), (S, b"334 UGFzc3dvcmQ6\r\n"), (C, b"SHVudGVyMi1Ob3RSZWFsIQ==\r\n"),
         (S, b"535 5.7.3 Authentication unsuccessful\r\n")],
        [("G", 220), ("C", "EHLO", "client.example.org"), ("R", 250, "EHLO", None), ("C", "AUTH", "LOGIN"),
         ("R", 334, "AUTH", None), ("C", "**", REDACTED), ("R", 334, "**", None), ("C", "**", REDACTED),
         ("R", 535, "**", "5.7.3")],
    ),
    (
        "AUTH PLAIN with an initial response",
        [GREETING, (C, b"AUTH PLAIN AHByaW50ZXJAY29udG9zby5jb20ASHVudGVyMi1Ob3RSZWFsIQ==\r\n"), (S, b"235 2.7.0 Authentication successful\r\n")],
        [("G", 220), ("C", "AUTH", "PLAIN " + REDACTED), ("R", 235, "AUTH", "2.7.0")],
    ),
    (
        "a line sent while AUTH is pending is a credential even before the 334 arrives",
        [GREETING, (C, b"AUTH LOGIN\r\ncHJpbnRlcg==\r\n"), (S, b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"), (C, b"*\r\n"), (S, b"501 5.7.0 cancelled\r\n")],
        [("G", 220), ("C", "AUTH", "LOGIN"), ("C", "**", REDACTED), ("R", 334, "AUTH", None), ("R", 334, "**", None),
         ("C", "**", "*"), ("R", 501, "**", "5.7.0")],
    ),
    (
        "STARTTLS accepted: the rest is TLS",
        [GREETING, EHLO, EHLO_REPLY, (C, b"STARTTLS\r\n"), (S, b"220 2.0.0 SMTP server ready\r\n"),
         (C, b"\x16\x03\x01\x00\x05hello")],
        [("G", 220), ("C", "EHLO", "client.example.org"), ("R", 250, "EHLO", None), ("C", "STARTTLS", ""),
         ("R", 220, "STARTTLS", "2.0.0"), ("TLS",)],
    ),
    (
        "STARTTLS refused: back to commands",
        [GREETING, (C, b"STARTTLS\r\n"), (S, b"454 4.7.0 TLS not available due to local problem\r\n"), (C, b"QUIT\r\n"), (S, b"221 bye\r\n")],
        [("G", 220), ("C", "STARTTLS", ""), ("R", 454, "STARTTLS", "4.7.0"), ("C", "QUIT", ""), ("R", 221, "QUIT", None)],
    ),
    (
        "client starts TLS before the 220 arrives",
        [GREETING, (C, b"STARTTLS\r\n\x16\x03\x01\x00\x05hello"), (S, b"220 2.0.0 go ahead\r\n")],
        [("G", 220), ("C", "STARTTLS", ""), ("R", 220, "STARTTLS", "2.0.0"), ("W", "smtp_client_tls_before_starttls_reply"), ("TLS",)],
    ),
    (
        "client starts TLS without STARTTLS",
        [GREETING, (C, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")],
        [("G", 220), ("W", "smtp_client_tls_without_starttls")],
    ),
    (
        "client starts TLS although STARTTLS was refused",
        [GREETING, (C, b"STARTTLS\r\n\x16\x03\x01\x00\x05hello"), (S, b"502 5.5.1 not implemented\r\n")],
        [("G", 220), ("C", "STARTTLS", ""), ("R", 502, "STARTTLS", "5.5.1"), ("W", "smtp_client_tls_after_starttls_refused")],
    ),
    (
        "server refuses with its greeting",
        [(S, b"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using Spamhaus\r\n")],
        [("G", 554)],
    ),
    (
        "421 greeting, multi-line",
        [(S, b"421-4.3.2 Service not available\r\n421 4.3.2 closing transmission channel\r\n")],
        [("G", 421)],
    ),
    (
        "unknown command and its 500",
        [GREETING, (C, b"XYZZY plugh\r\n"), (S, b"500 5.3.3 Unrecognized command\r\n")],
        [("G", 220), ("C", "XYZZY", "plugh"), ("R", 500, "XYZZY", "5.3.3")],
    ),
    (
        "RSET and a second transaction",
        [GREETING, (C, b"MAIL FROM:<a@x>\r\n"), (S, b"250 ok\r\n"), (C, b"RSET\r\n"), (S, b"250 2.0.0 Resetting\r\n"),
         (C, b"MAIL FROM:<b@x>\r\n"), (S, b"451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (AS761)\r\n")],
        [("G", 220), ("C", "MAIL", "FROM:<a@x>"), ("R", 250, "MAIL", None), ("C", "RSET", ""), ("R", 250, "RSET", "2.0.0"),
         ("C", "MAIL", "FROM:<b@x>"), ("R", 451, "MAIL", "4.7.500")],
    ),
    (
        "bare LF line endings and a bare-LF body end",
        [(S, b"220 mx\n"), (C, b"HELO x\n"), (S, b"250 ok\n"), (C, b"DATA\n"), (S, b"354 go\n"), (C, b"text\n.\n"), (S, b"250 ok\n")],
        [("G", 220), ("C", "HELO", "x"), ("R", 250, "HELO", None), ("C", "DATA", ""), ("R", 354, "DATA", None),
         ("B", "data", 5), ("R", 250, ".", None)],
    ),
    (
        "empty message body",
        [GREETING, (C, b"DATA\r\n"), (S, b"354 go\r\n"), (C, b".\r\n"), (S, b"250 ok\r\n")],
        [("G", 220), ("C", "DATA", ""), ("R", 354, "DATA", None), ("B", "data", 0), ("R", 250, ".", None)],
    ),
    (
        "reply with no text, and a reply nobody asked for",
        [GREETING, (C, b"NOOP\r\n"), (S, b"250\r\n421 4.4.2 timeout\r\n")],
        [("G", 220), ("C", "NOOP", ""), ("R", 250, "NOOP", None), ("R", 421, None, "4.4.2"), ("W", "smtp_unmatched_reply")],
    ),
    (
        "garbage from the server is reported, not paired",
        [GREETING, (C, b"NOOP\r\n"), (S, b"hello there\r\n250 ok\r\n")],
        [("G", 220), ("C", "NOOP", ""), ("W", "smtp_invalid_reply_line"), ("R", 250, "NOOP", None)],
    ),
    (
        "one-sided capture (client only): no verdicts to wait for",
        [(C, b"EHLO me\r\nAUTH LOGIN\r\ncHJpbnRlcg==\r\nSHVudGVy\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
         (C, b"Subject: 1\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")],
        [("C", "EHLO", "me"), ("C", "AUTH", "LOGIN"), ("C", "**", REDACTED), ("C", "**", REDACTED),
         ("C", "MAIL", "FROM:<a@x>"), ("C", "RCPT", "TO:<b@y>"), ("C", "DATA", ""), ("B", "data", 20),
         ("C", "MAIL", "FROM:<a@x>"), ("C", "RCPT", "TO:<c@y>"), ("C", "DATA", ""), ("B", "data", 3), ("C", "QUIT", "")],
    ),
    (
        "last reply line without its line ending",
        [GREETING, (C, b"QUIT\r\n"), (S, b"221 2.0.0 bye")],
        [("G", 220), ("C", "QUIT", ""), ("R", 221, "QUIT", "2.0.0")],
    ),
]


@pytest.mark.parametrize("name,script,expected", CASES, ids=[c[0] for c in CASES])
def test_events(name, script, expected):
    _conv, events = run(script)
    assert events == expected


@pytest.mark.parametrize("name,script,expected", CASES, ids=[c[0] for c in CASES])
def test_events_byte_by_byte(name, script, expected):
    _conv, events = run(script, chunker=lambda data: [data[i : i + 1] for i in range(len(data))])
    assert events == expected


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=8))
def test_events_any_split(case, cuts):
    _name, script, expected = case

    def chunker(data):
        pieces, start = [], 0
        for cut in sorted(set(cuts)):
            if start < cut < len(data):
                pieces.append(data[start:cut])
                start = cut
        pieces.append(data[start:])
        return pieces

    _conv, events = run(script, chunker=chunker)
    assert events == expected


def test_starttls_leftovers_go_to_tls():
    conv, _ = run([GREETING, (C, b"STARTTLS\r\n"), (S, b"220 2.0.0 ready\r\n\x16\x03\x03\x00\x02ab"), (C, b"\x16\x03\x01\x00\x01z")], finish=False)
    assert conv.mode == "TLS"
    assert conv.tls_started_by == "starttls"
    assert conv.server_leftover == b"\x16\x03\x03\x00\x02ab"
    assert conv.client_leftover == b"\x16\x03\x01\x00\x01z"


@pytest.mark.parametrize(
    "mechanism_script,user",
    [
        ([(C, b"AUTH LOGIN\r\n"), (S, b"334 VXNlcm5hbWU6\r\n"), (C, b"cHJpbnRlckBjb250b3NvLmNvbQ==\r\n"), (S, b"334 UGFzc3dvcmQ6\r\n"), (C, b"SHVudGVyMi1Ob3RSZWFsIQ==\r\n"), (S, b"235 ok\r\n")], "printer@contoso.com"),
        ([(C, b"AUTH LOGIN cHJpbnRlckBjb250b3NvLmNvbQ==\r\n"), (S, b"334 UGFzc3dvcmQ6\r\n"), (C, b"SHVudGVyMi1Ob3RSZWFsIQ==\r\n"), (S, b"235 ok\r\n")], "printer@contoso.com"),
        ([(C, b"AUTH PLAIN AHByaW50ZXJAY29udG9zby5jb20ASHVudGVyMi1Ob3RSZWFsIQ==\r\n"), (S, b"235 ok\r\n")], "printer@contoso.com"),
        ([(C, b"AUTH PLAIN\r\n"), (S, b"334 \r\n"), (C, b"AHByaW50ZXJAY29udG9zby5jb20ASHVudGVyMi1Ob3RSZWFsIQ==\r\n"), (S, b"235 ok\r\n")], "printer@contoso.com"),
        ([(C, b"AUTH XOAUTH2 dXNlcj1wcmludGVyQGNvbnRvc28uY29tAWF1dGg9QmVhcmVyIHRva2VuAQE=\r\n"), (S, b"235 ok\r\n")], "printer@contoso.com"),
    ],
)
def test_username_only_when_asked_and_never_the_password(mechanism_script, user):
    script = [GREETING] + mechanism_script
    _conv, hidden = run(script, reveal=False)
    assert not [e for e in hidden if e[0] == "U"]
    _conv, shown = run(script, reveal=True)
    users = [e[1] for e in shown if e[0] == "U"]
    assert users == [user]
    text = repr(shown)
    for secret in ("Hunter2", "SHVudGVy", "token", "dG9rZW4"):
        assert secret not in text


@pytest.mark.parametrize(
    "text,code,expected",
    [
        ("5.7.139 Authentication unsuccessful", 535, "5.7.139"),
        ("2.0.0 SMTP server ready", 220, "2.0.0"),
        ("4.7.500 Server busy", 451, "4.7.500"),
        ("5.7.1 wrong class", 451, None),  # RFC 3463: the class must match the reply's first digit
        ("mx.example.com ESMTP", 220, None),
        ("5.7.1234 too long detail", 550, None),
        ("5.7.64", 550, "5.7.64"),
    ],
)
def test_enhanced_code(text, code, expected):
    assert enhanced_code(text, code) == expected


def test_334_lines_have_no_enhanced_code():
    _conv, events = run([GREETING, (C, b"AUTH LOGIN\r\n"), (S, b"334 2.7.0 looks like a code\r\n")])
    assert ("R", 334, "AUTH", None) in events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=30))
def test_any_bytes_never_crash_and_stay_bounded(steps):
    conv = SmtpConversation(reveal_username=True)
    for ts, (direction, data) in enumerate(steps):
        conv.receive(direction, data, ts)
        conv.gap(direction, 10, ts) if ts % 7 == 6 else None
    conv.end_of_stream(True, 0)
    conv.end_of_stream(False, 0)
    assert len(conv._cbuf) <= 9000 and len(conv._sbuf) <= 9000
    assert len(conv._held) <= 64 * 1024


def test_endless_line_is_cut_not_buffered():
    conv = SmtpConversation()
    events = []
    for _ in range(100):
        events += conv.receive(False, b"2" * 1000, 0)
    assert any(isinstance(e, Weird) and e.name == "smtp_line_too_long" for e in events)
    assert len(conv._sbuf) <= 9000


def test_body_end_found_after_a_gap_by_the_servers_reply():
    conv = SmtpConversation()
    events = []
    for direction, data in [GREETING, (C, b"DATA\r\n"), (S, b"354 go\r\n"), (C, b"some body")]:
        events += conv.receive(direction, data, 0)
    events += conv.gap(True, 500, 1)
    events += conv.receive(False, b"250 2.6.0 queued\r\n", 2)
    simple = simplify(events)
    assert ("B", "data", 509) in simple
    assert ("R", 250, ".", "2.6.0") in simple
    assert conv.mode == "COMMAND"


def test_records_are_equal_only_to_their_own_class():
    """Parser records are NamedTuples (protocols/record.py) that compare like dataclasses:
    equal to a record of the same class and values, never to another class or a plain tuple."""
    from analyzer.protocols.dns.message import MxRdata, Question
    from analyzer.protocols.smtp.events import Command, Weird
    from analyzer.protocols.tls.events import ChangeCipherSpec, NotTls

    same_values = [
        (Command(1, "NOOP", "", True), Command(1, "NOOP", "", True), Weird(1, "NOOP", "", True)),
        (NotTls(5, True, "text"), NotTls(5, True, "text"), (5, True, "text")),
        (ChangeCipherSpec(5, False), ChangeCipherSpec(5, False), MxRdata(5, False)),
        (Question("a.example", 1, 1), Question("a.example", 1, 1), ("a.example", 1, 1)),
    ]
    for record, twin, other in same_values:
        assert record == twin and not record != twin and hash(record) == hash(twin)
        assert record != other and other != record and not record == other and not other == record
        assert {record: 1}.get(twin) == 1
    assert repr(Command(1, "NOOP", "")) == "Command(ts=1, verb='NOOP', argument='', known=True)"
