"""A deadline on the request message of every unary-request call.

grpc.aio starts a unary-request handler only once its request message has arrived, and
gives the application no hook before that: a caller that sends headers and never the
message holds an HTTP/2 stream and a server task for as long as it likes. `Deadlined`
registers each such method as a streaming-request one instead (the same bytes on the
wire: one message, then half-close), reads that one message itself within `deadline`,
and then calls the real behaviour. A call whose request does not arrive in time ends
with DEADLINE_EXCEEDED; one that half-closes without a request, with INVALID_ARGUMENT.

The conversion happens once, at registration (not in a per-call interceptor, which
costs every call a lookup and new handler objects). The deadline costs a call two dict
operations (`Arrivals`), not a timer of its own: `asyncio.timeout` per call was a
TimerHandle, a heap push and a cancelled heap entry each, about a tenth of the server's
CPU per `GetCredential`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, NoReturn

import grpc

RECEIVE_DEADLINE = 5.0  # seconds for the request message, counted from the headers
SWEEPS = 10  # sweeps per deadline: a late call ends within 1/SWEEPS of it after the deadline


class Arrivals:
    """Calls waiting for their request message, and one timer that ends those waiting
    longer than `deadline`: every `deadline / SWEEPS` seconds while any call waits, it
    cancels each call that has waited more than SWEEPS sweeps, so a call ends between
    `deadline` and `deadline * (1 + 1/SWEEPS)` after it began to wait."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._period = deadline / SWEEPS
        self._sweeps = 0
        self._waiting: dict[asyncio.Task[Any], int] = {}  # call -> sweeps when it began
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, context: grpc.aio.ServicerContext) -> Any:
        """The call's next message, or TimeoutError once it has waited past the deadline."""
        task = asyncio.current_task()
        assert task is not None  # grpc runs every call in a task of its own
        self._waiting[task] = self._sweeps
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period, self._sweep)
        try:
            return await context.read()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # the caller went away, or the server is stopping
            task.uncancel()
            raise TimeoutError from None
        finally:
            del self._waiting[task]
            if self._expired:
                self._expired.discard(task)

    def _sweep(self) -> None:
        self._sweeps += 1
        for task, began in self._waiting.items():
            if self._sweeps - began > SWEEPS and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = (asyncio.get_running_loop().call_later(self._period, self._sweep)
                       if self._waiting else None)


class Deadlined:
    """Stands in for the server in a generated `add_*Servicer_to_server(servicer, server)`
    call, and registers the service's methods with the receive deadline.

    Every method is served through one generic handler, none as a registered method:
    grpc.aio's accept loop waits on one future per registered method (plus one for all
    generic calls) in an `asyncio.wait` per accepted call, so each registered method made
    every call dearer (7 methods here: about 8 % of the server's CPU per `GetCredential`).
    `raw_responses` names methods (`/package.Service/Method`) whose behaviour returns its
    response already serialized: grpc sends those bytes as they are."""

    def __init__(self, server: grpc.aio.Server, deadline: float = RECEIVE_DEADLINE, *,
                 raw_responses: Collection[str] = ()) -> None:
        self._server = server
        self._arrivals = Arrivals(deadline)
        self._raw = frozenset(raw_responses)
        self._methods = _Methods()
        server.add_generic_rpc_handlers((self._methods,))

    def add_registered_method_handlers(
            self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods.handlers[method] = self.convert(handler, raw=method in self._raw)

    def add_generic_rpc_handlers(self, generic: Sequence[grpc.GenericRpcHandler]) -> None:
        """After the methods added by name, which generated code adds as well."""
        self._server.add_generic_rpc_handlers(tuple(_Generic(g, self) for g in generic))

    def converts_raw(self, method: str) -> bool:
        return method in self._raw

    def convert(self, handler: grpc.RpcMethodHandler, *, raw: bool = False
                ) -> grpc.RpcMethodHandler:
        """`handler` with a request-message deadline (a streaming request: as it is);
        `raw`: its unary behaviour returns serialized bytes."""
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
            response_serializer=None if raw else handler.response_serializer)

    def _unary(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        read, end = self._arrivals.read, self._end

        async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            try:  # `_first`, inline: the hot path has one coroutine less
                message = await read(context)
            except TimeoutError:
                await end(context, late=True)
            if message is grpc.aio.EOF:
                await end(context, late=False)
            return await behaviour(message, context)
        return call

    def _streaming(self, behaviour: Callable[..., AsyncIterator[Any]]
                   ) -> Callable[..., AsyncIterator[Any]]:
        async def call(requests: AsyncIterator[Any],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in behaviour(await self._first(context), context):
                yield response
        return call

    async def _first(self, context: grpc.aio.ServicerContext) -> Any:
        """The call's one request message, or the call ended."""
        try:
            message = await self._arrivals.read(context)
        except TimeoutError:
            await self._end(context, late=True)
        if message is grpc.aio.EOF:
            await self._end(context, late=False)
        return message

    async def _end(self, context: grpc.aio.ServicerContext, *, late: bool) -> NoReturn:
        """End a call whose request came `late`, or never (it half-closed without one)."""
        if late:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the request message did not arrive within "
                                f"{self._arrivals.deadline:g}s of the call's headers")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            "the call ended without its request message")
        raise AssertionError("abort returned")  # context.abort always raises


class _Methods(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Converted handlers by full method name: one dict lookup per call."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(details.method)


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
            self._converted[method] = None if handler is None else self._owner.convert(
                handler, raw=self._owner.converts_raw(method))
        return self._converted[method]
