"""Directory calls on the event loop for a network database, through an async driver.

The directory's code is synchronous. On PostgreSQL it used to run in a pool of worker
threads: each request paid a hop to a thread and back and the threads' contention for the GIL
with the event loop, measured at about half the client CPU of a GET by id. Here it runs in a
greenlet on the event loop instead (SQLAlchemy's asyncio bridge): where a statement waits for
the server, the greenlet hands the wait to the loop, which serves other requests meanwhile.

Each call borrows a slot (a read connection in autocommit mode and a write connection) for
its duration; the directory uses the borrowed connections instead of its per-thread ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from scimd.store.engine import json_text, postgres_connect_args

T = TypeVar("T")


@dataclass(slots=True)
class Slot:
    read: AsyncConnection
    write: AsyncConnection

    def connections(self) -> tuple[sa.Connection, sa.Connection]:
        return self.read.sync_connection, self.write.sync_connection  # type: ignore[return-value]

    def broken(self) -> bool:
        return any(
            c.closed or c.invalidated or bool(c.sync_connection.connection.driver_connection.closed)  # type: ignore[union-attr]
            for c in (self.read, self.write)
        )


# The connections of the call running in the current greenlet (see ``Directory``).
BORROWED: ContextVar[tuple[sa.Connection, sa.Connection] | None] = ContextVar(
    "scimd_borrowed", default=None
)


class LoopRunner:
    """Runs synchronous directory calls in greenlets on the loop, ``size`` at a time."""

    def __init__(self, url: str, size: int) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            pool_size=2 * size,
            max_overflow=0,
            pool_recycle=3600,
            connect_args=postgres_connect_args(url),
        )
        self.size = size
        self._slots: asyncio.Queue[Slot] | None = None
        self._made = 0

    async def _slot(self) -> Slot:
        if self._slots is None:
            self._slots = asyncio.Queue()
        if self._slots.empty() and self._made < self.size:
            self._made += 1
            try:
                return await self._open()
            except BaseException:
                self._made -= 1
                raise
        return await self._slots.get()

    async def _open(self) -> Slot:
        read = await (await self.engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        write = await self.engine.connect()
        return Slot(read, write)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        slot = await self._slot()
        assert self._slots is not None
        try:
            return await greenlet_spawn(_call, slot, fn, args)
        finally:
            if slot.broken():
                await self._discard(slot)
            else:
                self._slots.put_nowait(slot)

    async def _discard(self, slot: Slot) -> None:
        self._made -= 1
        for conn in (slot.read, slot.write):
            try:
                if not conn.closed:
                    await conn.invalidate()
                    await conn.close()
            except Exception:  # pragma: no cover - a dead connection may fail to close
                pass

    async def close(self) -> None:
        if self._slots is not None:
            while not self._slots.empty():
                slot = self._slots.get_nowait()
                await slot.read.close()
                await slot.write.close()
        await self.engine.dispose()


def _call(slot: Slot, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    token = BORROWED.set(slot.connections())
    try:
        return fn(*args)
    finally:
        BORROWED.reset(token)
