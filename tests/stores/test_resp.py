"""RESP2 as the pipelined Redis connection reads and writes it: whole, split, many at once."""

from __future__ import annotations

import pytest

from retrysafe.stores.resp import ErrorReply, Reply, ReplyParser, command

# One stream of what the store's scripts and the handshake can answer, and what each is.
STREAM: list[tuple[bytes, Reply]] = [
    (b"+OK\r\n", b"OK"),
    (b":1\r\n", 1),
    (b":-42\r\n", -42),
    (b"$-1\r\n", None),
    (b"$0\r\n\r\n", b""),
    (b"$12\r\nline\r\nbreaks\r\n", b"line\r\nbreaks"),
    (b"-NOSCRIPT No matching script.\r\n", ErrorReply("NOSCRIPT No matching script.")),
    (b"*1\r\n$7\r\nclaimed\r\n", [b"claimed"]),
    (
        b"*2\r\n$8\r\nexisting\r\n$18\r\n11:fingerprint2:fp\r\n",
        [b"existing", b"11:fingerprint2:fp"],
    ),
    (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*0\r\n", [1, [b"a", None], []]),
    (b"*-1\r\n", None),
    (b"*2\r\n-ERR inner\r\n+fine\r\n", [ErrorReply("ERR inner"), b"fine"]),
]
WIRE = b"".join(wire for wire, _ in STREAM)
REPLIES = [reply for _, reply in STREAM]


def test_many_replies_in_one_read_come_out_in_order() -> None:
    assert ReplyParser().feed(WIRE) == REPLIES


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_a_stream_cut_anywhere_gives_the_same_replies(cut: int) -> None:
    """Every byte offset, inside a header, a bulk string, its CRLF or a nested array."""
    parser = ReplyParser()
    first = parser.feed(WIRE[:cut])
    second = parser.feed(WIRE[cut:])
    assert first + second == REPLIES
    assert parser.pending == 0


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_replies() -> None:
    parser = ReplyParser()
    replies = [reply for byte in WIRE for reply in parser.feed(bytes([byte]))]
    assert replies == REPLIES


def test_an_incomplete_reply_is_held_until_its_rest_arrives() -> None:
    parser = ReplyParser()
    assert parser.feed(b":7\r\n*2\r\n$3\r\nab") == [7]
    assert parser.pending == len(b"*2\r\n$3\r\nab")
    assert parser.feed(b"c\r\n") == []
    assert parser.feed(b":8\r\n") == [[b"abc", 8]]
    assert parser.pending == 0


def test_a_large_bulk_string_in_many_reads_is_whole_once_complete() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, CRLFs included
    wire = b"$%d\r\n%s\r\n" % (len(body), body)
    parser = ReplyParser()
    pieces = [wire[at : at + 65536] for at in range(0, len(wire), 65536)]
    replies = [reply for piece in pieces for reply in parser.feed(piece)]
    assert replies == [body]


def test_an_error_reply_names_its_code() -> None:
    assert ErrorReply("NOSCRIPT No matching script.").code == "NOSCRIPT"
    assert ErrorReply("ERR").code == "ERR"


def test_a_byte_that_starts_no_reply_is_a_protocol_error() -> None:
    with pytest.raises(ValueError, match="not a RESP2 reply"):
        ReplyParser().feed(b"?what\r\n")


def test_a_command_is_an_array_of_bulk_strings_in_utf8() -> None:
    assert command(["EVALSHA", "ab", "1", "k", b"\x00\r\n", "é"]) == (
        b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_a_command_parses_back_as_its_arguments() -> None:
    """The wire format is its own inverse here: the scripted test server reads commands so."""
    args = [b"SET", b"key", b"a value\r\nwith a break", b""]
    assert ReplyParser().feed(command(args)) == [args]
