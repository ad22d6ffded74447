"""The waiting room in Redis: joins, ticket status and the schedule, all through queue.lua on the
sale's slot (see that script for the keys and the state). There is no admitter process: who is
admitted is a pure function of that state and Redis TIME, so every call here may be repeated, by any
process, after any restart.

Shares the stock store's client, scripts and rate limits, and its pipelined connection when it has
one (the API's: joins and looks are the crowd's requests when a sale has a waiting room). Raises
flashsale.errors only."""

from __future__ import annotations

from typing import Any

from flashsale import errors
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import RedisStock, guarded
from flashsale.domain.waiting_room import Mode, RoomState, Schedule, TicketStatus

# queue.lua's refusals.
_REFUSALS: dict[int, type[errors.FlashSaleError]] = {
    2: errors.SaleNotFound,
    6: errors.SaleClosed,
    10: errors.SoldOut,
    12: errors.WaitingRoomDisabled,
    13: errors.NotInQueue,
}
_RATE_LIMITED = 3
# Status looks and schedule reads come from our own processes (SSE, admin): no buyer limits apply.
_NO_LIMIT: tuple[float, int, float, int] = (0.0, 1, 0.0, 1)


def _refuse(reply: list[Any]) -> None:
    code = int(reply[0])
    if code == 0:
        return
    if code == _RATE_LIMITED:
        raise errors.RateLimited(int(reply[1]))
    raise _REFUSALS[code]()


def _ticket(reply: list[Any]) -> TicketStatus:
    (_, seq, joined_ms, rank, admitted, admitted_ms, first, joined, now, rate, session, opens,
     remaining, new) = (int(v) for v in reply)  # fmt: skip
    return TicketStatus(
        seq=seq,
        joined_ms=joined_ms,
        rank=None if rank < 0 else rank,
        admitted=admitted,
        admitted_ms=admitted_ms or None,
        first_admission=bool(first),
        new_ticket=bool(new),
        joined=joined,
        now_ms=now,
        rate=rate,
        session_s=session,
        opens_ms=opens,
        remaining=remaining,
    )


def _text(value: str | bytes) -> str:
    """A string reply: str from redis-py (decode_responses), bytes from the pipelined connection."""
    return value.decode() if isinstance(value, bytes) else value


class RedisQueue:
    """One per process, on top of the process's stock store."""

    def __init__(self, stock: RedisStock) -> None:
        self._stock = stock  # its scripts and limits are looked up per call: cheap, and lazy
        self._hot_sha: str | None = None

    async def _run(
        self, op: str, sale_id: str, user_id: str, *, client_addr: str | None
    ) -> list[Any]:
        if client_addr is None:
            user_interval, user_burst, addr_interval, addr_burst = _NO_LIMIT
        else:
            limits = self._stock.limits
            user_interval, user_burst = limits.user_interval_ms, limits.user_burst
            addr_interval, addr_burst = limits.addr_interval_ms, limits.addr_burst
        script_keys = [
            keys.sale(sale_id),
            keys.queue_tickets(sale_id),
            keys.user_rate(user_id or "-"),
            keys.addr_rate(client_addr or "-"),
        ]
        script_args: list[Any] = [
            op, user_id, keys.sale_events(sale_id),
            user_interval, user_burst, addr_interval, addr_burst,
        ]  # fmt: skip
        script = self._stock.scripts["queue"]
        hot = self._stock.hot
        reply: list[Any]
        if hot is not None:  # ~18 us of client CPU instead of ~135 us (adapters/redis_pipe.py)
            if self._hot_sha is None:
                source = script.script
                text = source if isinstance(source, str) else bytes(source).decode()
                self._hot_sha = hot.register_script(text)
            reply = await hot.evalsha(self._hot_sha, script_keys, script_args)
        else:
            reply = await script(keys=script_keys, args=script_args)
        _refuse(reply)
        return reply

    @guarded("join queue")
    async def join(self, *, sale_id: str, user_id: str, client_addr: str) -> TicketStatus:
        """Join (or look again: the same user keeps the same ticket until its pass expires). The
        per-user and per-address rate limits apply here, in the same round trip."""
        return _ticket(await self._run("join", sale_id, user_id, client_addr=client_addr))

    @guarded("queue status")
    async def status(self, *, sale_id: str, user_id: str) -> TicketStatus:
        """A ticket as it stands now (records its first admission). NotInQueue without one."""
        return _ticket(await self._run("status", sale_id, user_id, client_addr=None))

    @guarded("queue schedule")
    async def state(self, sale_id: str) -> RoomState:
        """The waiting room as a whole: its schedule, counts and seed."""
        reply = await self._run("schedule", sale_id, "", client_addr=None)
        (now, opens, closes, remaining, mode, rate, session, base, since, paused, joined, drawn,
         seed, version) = reply[1:]  # fmt: skip
        return RoomState(
            now_ms=int(now),
            closes_ms=int(closes),
            remaining=int(remaining),
            mode=Mode(_text(mode)),
            session_s=int(session),
            schedule=Schedule(
                opens_ms=int(opens),
                base=int(base),
                since_ms=int(since),
                rate=int(rate),
                paused=bool(int(paused)),
            ),
            joined=int(joined),
            drawn=None if int(drawn) < 0 else int(drawn),
            seed=_text(seed),
            version=int(version),
        )
