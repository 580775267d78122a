"""Coalescing: targets that would make the identical exchange share one call.

Two targets with the same subject (SPIFFE ID), audience and chain of hops (same roles,
providers, durations, session parameters: the frozen hop configs compare equal) would
get the same authority from the same calls. The first to refresh makes the calls; one
that asks while that call is in flight waits for it, and one that asks while the result
is still before its safe window (younger than a quarter of its life) takes it as its
own. Each target still schedules its next refresh by its own draw, so whichever comes
first makes the next call for both. Failures are not shared: each target retries (and
backs off) on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace

from bridge.model import Credential, JwtSvid
from bridge.x509_svid import X509Svid

Result = tuple[Credential, JwtSvid | X509Svid]


class Coalescer:
    """Shared by the pipelines of one daemon generation."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._flights: dict[Hashable, asyncio.Future[Result]] = {}
        self._latest: dict[Hashable, Result] = {}
        self.shared = 0  # calls saved, for tests and metrics

    async def run(self, key: Hashable, target: str,
                  call: Callable[[], Awaitable[Result]]) -> Result:
        """`call()`'s result for `key`, or the one in flight or recent for it."""
        latest = self._latest.get(key)
        if latest is not None and self._young(latest[0]):
            self.shared += 1
            return _as(latest, target)
        flight = self._flights.get(key)
        if flight is not None:
            try:
                result = await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The call we joined was cancelled (its target stopped): make our own.
            except Exception:  # noqa: S110 - failures are not shared: try on our own
                pass
            else:
                self.shared += 1
                return _as(result, target)
        return await self._call(key, call)

    async def _call(self, key: Hashable, call: Callable[[], Awaitable[Result]]) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            result = await call()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joiners may be gone, no "never retrieved"
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._flights.get(key) is future:
                del self._flights[key]
        self._latest[key] = result
        future.set_result(result)
        return result

    def _young(self, c: Credential) -> bool:
        now = self._monotonic()
        return now < c.received + 0.25 * (c.deadline - c.received)


def _as(result: Result, target: str) -> Result:
    credential, svid = result
    return replace(credential, target=target), svid
