"""A deadline on the request message of every unary-request call.

grpc.aio starts a unary-request handler only once its request message has arrived, and
gives the application no hook before that: a caller that sends headers and never the
message holds an HTTP/2 stream and a server task for as long as it likes. `Deadlined`
registers each such method as a streaming-request one instead (the same bytes on the
wire: one message, then half-close), reads that one message itself within `deadline`,
and then calls the real behaviour. A call whose request does not arrive in time ends
with DEADLINE_EXCEEDED; one that half-closes without a request, with INVALID_ARGUMENT.

The conversion happens once, at registration (not in a per-call interceptor, which
costs every call a lookup and new handler objects).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

RECEIVE_DEADLINE = 5.0  # seconds for the request message, counted from the headers


class Deadlined:
    """Stands in for the server in a generated `add_*Servicer_to_server(servicer, server)`
    call, and registers the service's methods with the receive deadline."""

    def __init__(self, server: grpc.aio.Server, deadline: float = RECEIVE_DEADLINE) -> None:
        self._server = server
        self._deadline = deadline

    def add_registered_method_handlers(
            self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(service, self._convert_all(handlers))

    def add_generic_rpc_handlers(self, generic: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_Generic(g, self) for g in generic))

    def _convert_all(self, handlers: Mapping[str, grpc.RpcMethodHandler]
                     ) -> dict[str, grpc.RpcMethodHandler]:
        return {name: self.convert(h) for name, h in handlers.items()}

    def convert(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` with a request-message deadline (a streaming request: as it is)."""
        if handler.request_streaming:
            return handler
        if handler.response_streaming and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.response_streaming:  # it writes through context.write
            return grpc.stream_stream_rpc_method_handler(
                self._unary(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_unary_rpc_method_handler(
            self._unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _unary(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await behaviour(await self._request(context), context)
        return call

    def _streaming(self, behaviour: Callable[..., AsyncIterator[Any]]
                   ) -> Callable[..., AsyncIterator[Any]]:
        async def call(requests: AsyncIterator[Any],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in behaviour(await self._request(context), context):
                yield response
        return call

    async def _request(self, context: grpc.aio.ServicerContext) -> Any:
        """The call's one request message, or the call aborted."""
        try:
            async with asyncio.timeout(self._deadline):  # not wait_for (gh-86296)
                request = await context.read()
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the request message did not arrive within "
                                f"{self._deadline:g}s of the call's headers")
        if request is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the call ended without its request message")
        return request


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler's methods with the deadline, each converted once."""

    def __init__(self, inner: grpc.GenericRpcHandler, owner: Deadlined) -> None:
        self._inner = inner
        self._owner = owner
        self._converted: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method not in self._converted:
            handler = self._inner.service(details)
            self._converted[method] = None if handler is None else self._owner.convert(handler)
        return self._converted[method]
