"""gRPC plumbing around the servicer: request decoding, SDK errors to status codes, and the
generic handler that registers every method of the service from its descriptor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from lmrec import LmrecError

from ._admission import TooBusy
from ._batching import BatcherClosed, DeadlineExpired, QueueFull
from ._dataplane import NotReady
from .v1 import recommender_pb2 as pb

log = logging.getLogger("lmrec.server")

SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"]
SERVICE_NAME = SERVICE.full_name


def write_methods() -> set[str]:
    """Full method names that change state: every method the proto does not mark NO_SIDE_EFFECTS."""
    from google.protobuf import descriptor_pb2

    reads = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return {f"/{SERVICE_NAME}/{m.name}" for m in SERVICE.methods if m.GetOptions().idempotency_level != reads}


class Undecodable:
    """Stands in for a request the protobuf runtime rejected, so it becomes INVALID_ARGUMENT."""

    def __init__(self, type_name: str, error: DecodeError) -> None:
        self.message = f"request is not a valid {type_name} message ({error}); strings must be UTF-8"


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as e:
            return Undecodable(cls.DESCRIPTOR.full_name, e)

    return parse


def status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for an exception raised by a call."""
    if isinstance(error, (QueueFull, TooBusy)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
    if isinstance(error, (NotReady, BatcherClosed)):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, KeyError):
        message = str(error) if isinstance(error, LmrecError) else f"unknown id {error.args[0]!r}"
        return grpc.StatusCode.NOT_FOUND, message
    if isinstance(error, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, LmrecError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    log.exception("internal error", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


def _wrap(method: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """Decode check + exception-to-status mapping around one servicer method."""

    def check(request: Any, context: grpc.ServicerContext) -> None:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

    def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        check(request, context)
        try:
            yield from method(request, context)
        except Exception as e:
            if context.code() is not None:  # already aborted
                raise
            context.abort(*status(e))

    def answered(request: Any, context: grpc.ServicerContext) -> Any:
        if kind == "unary_unary":  # a client stream's messages are checked as they are read
            check(request, context)
        try:
            return method(request, context)
        except Exception as e:
            if context.code() is not None:
                raise
            context.abort(*status(e))

    return streamed if kind == "unary_stream" else answered


def generic_handler(servicer: Any) -> grpc.GenericRpcHandler:
    """Handlers for every method of the service, built from its descriptor.

    Like the generated add_RecommenderServicer_to_server, but undecodable requests (e.g. invalid
    UTF-8 in a string) become INVALID_ARGUMENT instead of grpc's generic INTERNAL.
    """
    factories = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    handlers = {}
    for method in SERVICE.methods:
        kind, factory = factories[(method.client_streaming, method.server_streaming)]
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handlers[method.name] = factory(
            _wrap(getattr(servicer, method.name), kind),
            request_deserializer=_deserializer(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


__all__ = ["generic_handler", "status", "write_methods", "Undecodable", "SERVICE", "SERVICE_NAME"]
