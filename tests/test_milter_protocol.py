"""The milter protocol's bytes: frames cut from any stream, the MTA's commands read, our
edits and decisions written as Postfix's milter8 reads them."""

from __future__ import annotations

import pytest

from aliasd.milter import protocol
from aliasd.milter.edits import ACCEPT, DISCARD, REJECT, TEMPFAIL, EditNotAllowed, MessageEdits
from aliasd.milter.protocol import FrameReader, ProtocolError, frame


def test_frames_are_cut_the_same_whatever_the_stream_chunks():
    stream = (frame(b"O", bytes(12)) + frame(b"L", b"Subject\0hi\0") + frame(b"B", b"x" * 70_000)
              + frame(b"E"))
    expected = [(b"O", bytes(12)), (b"L", b"Subject\0hi\0"), (b"B", b"x" * 70_000), (b"E", b"")]
    for size in (1, 3, 4, 5, 1000, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), size):
            got.extend(reader.feed(stream[start:start + size]))
        assert got == expected
        assert reader.pending == 0


def test_a_frame_longer_than_any_milter_sends_or_empty_is_refused():
    with pytest.raises(ProtocolError, match="limit"):
        list(FrameReader().feed(b"\xff\xff\xff\xffB"))
    with pytest.raises(ProtocolError, match="empty"):
        list(FrameReader().feed(b"\0\0\0\0"))
    # below the limit, an incomplete frame just waits for the rest
    reader = FrameReader()
    assert list(reader.feed((1 << 20).to_bytes(4, "big") + b"B" + b"x" * 10)) == []
    assert reader.pending == 15


def test_connect_helo_mail_and_macros_are_read_as_postfix_sends_them():
    ipv4 = protocol.parse_connect(b"mx.example\0" + b"4" + (2525).to_bytes(2, "big") + b"192.0.2.7\0")
    assert (ipv4.hostname, ipv4.family, ipv4.port, ipv4.address) == ("mx.example", "4", 2525, "192.0.2.7")
    ipv6 = protocol.parse_connect(b"[2001:db8::1]\0" + b"6" + bytes(2) + b"2001:db8::1\0")
    assert ipv6.address == "2001:db8::1"
    unknown = protocol.parse_connect(b"unknown\0U")
    assert (unknown.family, unknown.address) == ("U", "")
    with pytest.raises(ProtocolError):
        protocol.parse_connect(b"no family")
    stage, macros = protocol.parse_macros(b"Mi\0ABC123\0{auth_authen}\0alice\0")
    assert stage == b"M" and macros == {"i": "ABC123", "{auth_authen}": "alice"}
    assert protocol.parse_address_command(b"<a@b.example>\0SIZE=10\0BODY=8BITMIME\0") == (
        b"<a@b.example>", [b"SIZE=10", b"BODY=8BITMIME"])
    assert protocol.parse_header(b"Subject\0caf\xc3\xa9 \xff\0") == (b"Subject", b"caf\xc3\xa9 \xff")
    with pytest.raises(ProtocolError):
        protocol.parse_header(b"Subject-without-value")
    with pytest.raises(ProtocolError):
        protocol.parse_negotiation(b"\0\0\0\6")


def test_a_refusal_sends_its_reply_as_the_decision_and_no_edits():
    edits = MessageEdits(0xFF)
    edits.add_header("X-Spam", "Yes")
    edits.set_reply("550", "5.7.1", "rejected: 100% spam\r\nsecond line")
    # Postfix reads %% as % (sendmail's format-string heritage); one line only
    assert edits.encode(REJECT) == frame(b"y", b"550 5.7.1 rejected: 100%% spam  second line\0")
    # a reply of the wrong class is not sent: the plain decision is
    assert edits.encode(TEMPFAIL) == frame(b"t")
    assert edits.encode(DISCARD) == frame(b"d")


def test_an_accepted_message_gets_its_edits_in_order_then_accept():
    edits = MessageEdits(0xFF)
    edits.change_header("X-Spam", 2, "")
    edits.insert_header(0, "ARC-Seal", "i=1; cv=none")
    edits.add_header("X-Spam", "Yes")
    edits.delete_recipient("<bob@example.net>")
    edits.quarantine("held")
    assert edits.encode(ACCEPT) == b"".join([
        frame(b"m", (2).to_bytes(4, "big") + b"X-Spam\0\0"),
        frame(b"i", bytes(4) + b"ARC-Seal\0i=1; cv=none\0"),
        frame(b"h", b"X-Spam\0Yes\0"),
        frame(b"-", b"<bob@example.net>\0"),
        frame(b"q", b"held\0"),
        frame(b"a"),
    ])


def test_an_edit_the_mta_did_not_grant_fails_loudly():
    edits = MessageEdits(protocol.SMFIF_ADDHDRS)
    edits.add_header("X-Spam", "Yes")
    with pytest.raises(EditNotAllowed, match="hold"):
        edits.quarantine("held")
    with pytest.raises(ValueError, match="NUL"):
        edits.add_header("X-Bad", "a\0b")


def test_the_negotiation_answer_can_ask_for_macros_by_stage():
    plain = protocol.negotiation_reply(6, protocol.SMFIF_ADDHDRS, 0)
    assert plain == frame(b"O", b"\0\0\0\6" + b"\0\0\0\1" + b"\0\0\0\0")
    asking = protocol.negotiation_reply(6, protocol.SMFIF_ADDHDRS | protocol.SMFIF_SETSYMLIST, 0,
                                        {protocol.SMFIM_CONNECT: "j {client_resolve}"})
    assert asking == frame(b"O", b"\0\0\0\6" + b"\0\0\1\1" + b"\0\0\0\0"
                           + b"\0\0\0\0" + b"j {client_resolve}\0")


def test_a_replaced_body_goes_in_frames_postfix_joins_and_needs_the_grant():
    body = b"x" * (protocol.BODY_CHUNK + 10)
    frames = protocol.FrameReader().feed(protocol.replace_body(body))
    assert [c for c, _ in frames] == [protocol.SMFIR_REPLBODY] * 2
    assert b"".join(d for _, d in frames) == body
    with pytest.raises(EditNotAllowed):
        MessageEdits(protocol.SMFIF_ADDHDRS).replace_body(body)
