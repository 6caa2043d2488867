"""atheris target: any bytes through the framer, the request decoder, the error-id peek
and the shell path's MessagePack codec must fail only with their documented errors."""

import sys

import atheris

with atheris.instrument_imports():
    import msgspec

    from traced.daemon.handler import peek_id as _peek_id
    from traced.wire import minipack, protocol
    from traced.wire.framing import Framer, FrameTooLarge


def one(data: bytes) -> None:
    framer = Framer(limit=1 << 16)
    try:
        bodies = framer.feed(data)
    except FrameTooLarge:
        bodies = []
    for body in [*bodies, data]:
        try:
            protocol.decode_request(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        if not isinstance(_peek_id(body), int):
            raise AssertionError("peek must give an int")
        try:
            minipack.unpackb(body)
        except (ValueError, RecursionError):
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
