"""OTLP/HTTP request and response bodies, sans-IO: media types, bounded gzip, protobuf and OTLP/JSON.

Follows the OTLP specification's HTTP transport (opentelemetry-proto, ``docs/specification.md``):

- ``Content-Type: application/x-protobuf`` (binary protobuf) or ``application/json``
  (OTLP/JSON: the proto3 JSON mapping, except that trace and span ids are hex
  strings, enums may be integers and 64-bit integers may be strings);
- ``Content-Encoding: gzip`` or none;
- success: 200 with an ``Export*ServiceResponse`` in the request's encoding, with
  ``partial_success`` when some items were rejected;
- failure: 4xx with a ``google.rpc.Status`` (protobuf or JSON, as the request was).

Every limit is in bytes and applies to the body as sent *and* after gzip, read
in bounded steps, so a gzip bomb costs at most ``limit`` bytes of memory.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any, Final, Literal

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traced.errors import OtlpRequestError

Encoding = Literal["protobuf", "json"]
Signal = Literal["traces", "logs"]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_ID_KEYS: Final = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def media_type(content_type: str | None) -> Encoding:
    """``protobuf`` or ``json`` for a Content-Type header (parameters ignored); OtlpRequestError 415 otherwise."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value in (PROTOBUF, "application/protobuf"):
        return "protobuf"
    if value == JSON:
        return "json"
    raise OtlpRequestError(415, f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}")


def check_encoding(content_encoding: str | None) -> bool:
    """Whether the body is gzipped; OtlpRequestError 415 for any coding but gzip and identity."""
    value = (content_encoding or "").strip().lower()
    if value in ("", "identity"):
        return False
    if value in ("gzip", "x-gzip"):
        return True
    raise OtlpRequestError(415, f"unsupported content encoding {content_encoding!r}: use gzip or none")


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body (concatenated members too) to at most ``limit`` bytes.

    Raises OtlpRequestError 413 when it inflates past ``limit`` (it stops there:
    memory stays bounded) and 400 when it is not gzip or is truncated.
    """
    out = bytearray()
    rest = data
    while rest:  # one gzip member per turn
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while True:
                out += inflater.decompress(pending, limit + 1 - len(out))  # never more than the room left
                if len(out) > limit:
                    raise OtlpRequestError(413, f"body inflates past the limit of {limit} bytes")
                if inflater.eof:
                    rest = inflater.unused_data
                    break
                pending = inflater.unconsumed_tail
                if not pending:
                    raise OtlpRequestError(400, "truncated gzip body")
        except zlib.error as e:
            raise OtlpRequestError(400, f"bad gzip body: {e}") from None
    return bytes(out)


def _hex_ids(node: Any) -> Any:
    """OTLP/JSON ids are hex; the proto3 JSON parser wants base64. Anything else passes as it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                if len(value) in (16, 32):
                    try:
                        node[key] = base64.b64encode(binascii.unhexlify(value)).decode()
                    except (binascii.Error, ValueError):
                        pass  # not hex: perhaps base64 already
            elif isinstance(value, dict | list):
                _hex_ids(value)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                _hex_ids(value)
    return node


def parse(signal: Signal, data: bytes, encoding: Encoding) -> Message:
    """The ``Export{Trace,Logs}ServiceRequest`` in ``data``; OtlpRequestError 400 when it is not one.

    Unknown JSON fields are ignored, as the specification asks of receivers.
    """
    message: Message = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
    if encoding == "protobuf":
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise OtlpRequestError(400, f"bad protobuf body: {e}") from None
        return message
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as e:
        raise OtlpRequestError(400, f"bad JSON body: {e or 'nested too deep'}") from None
    if not isinstance(raw, dict):
        raise OtlpRequestError(400, "bad JSON body: not an object")
    try:
        json_format.ParseDict(_hex_ids(raw), message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise OtlpRequestError(400, f"bad OTLP/JSON body: {e}") from None
    return message


def success(signal: Signal, encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """The 200 body: an empty ``Export*ServiceResponse``, or one with ``partial_success``."""
    response: Message
    if signal == "traces":
        response = ExportTraceServiceResponse()
        if rejected or message:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
    else:
        response = ExportLogsServiceResponse()
        if rejected or message:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
    if encoding == "protobuf":
        return bytes(response.SerializeToString())
    return str(json_format.MessageToJson(response, indent=None)).encode()


GRPC_CODES: Final = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 421: 7, 429: 8, 500: 13, 503: 14}
"""HTTP status -> google.rpc.Code for the error body (INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED…)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def status_body(status: int, message: str, encoding: Encoding) -> bytes:
    """A ``google.rpc.Status {code, message}`` for a 4xx/5xx response (hand-encoded: two fields)."""
    code = GRPC_CODES.get(status, 2)
    if encoding == "json":
        return msgspec.json.encode({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
