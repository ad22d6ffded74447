"""Every Redis key and channel name flashsale uses, in one place.

All keys of one sale share the hash tag {sale_id}, so a sale's keys live in one cluster slot and one
Lua script can touch them all. The two work streams are global on purpose: KEDA's redis-streams
trigger watches one stream per trigger, and a worker reads all sales in one XREADGROUP (see README
"Design notes"). Sale ids match domain.sales.SALE_ID_RE and user ids match api auth's USER_ID_RE, so
neither contains ':', '{' or '}' and the names below are unambiguous."""

from __future__ import annotations

PREFIX = "fs"

# Global
SALES = f"{PREFIX}:sales"  # set of live sale ids
ORDER_STREAM = f"{PREFIX}:orders"  # reserve.lua -> order worker
PAYMENT_STREAM = f"{PREFIX}:payments"  # order worker -> payment worker
ORDER_GROUP = "order-workers"
PAYMENT_GROUP = "payment-workers"
ORDER_EVENTS = f"{PREFIX}:events:orders"  # pub/sub: order status changes, for /v1/me/events
SALE_EVENTS_PATTERN = f"{PREFIX}:{{*}}:events"  # pub/sub pattern over every sale's channel
RECONCILER_LOCK = f"{PREFIX}:lock:reconciler"
# Metrics beacons (adapters/beacon.py): one short-lived snapshot per process, and their index.
BEACONS = f"{PREFIX}:beacons"  # sorted set: beacon key -> time of its last write


def beacon(kind: str, process_id: str) -> str:
    """String (TTL a few seconds): one process's metrics snapshot, e.g. fs:beacon:api:pod-a-7."""
    return f"{PREFIX}:beacon:{kind}:{process_id}"


def placed_order(order_id: str) -> str:
    """String: a just-reserved order's summary, until the order worker has written its row."""
    return f"{PREFIX}:po:{order_id}"


def user_rate(user_id: str) -> str:
    return f"{PREFIX}:rl:u:{user_id}"


def addr_rate(addr: str) -> str:
    return f"{PREFIX}:rl:a:{addr}"


# Per sale (hash tag {sale_id})
def sale(sale_id: str) -> str:
    """Hash: definition, remaining stock, unit counters per status, seq."""
    return f"{PREFIX}:{{{sale_id}}}:sale"


def holds(sale_id: str) -> str:
    """Hash user_id -> units held (pending + confirmed + needs_reconciliation)."""
    return f"{PREFIX}:{{{sale_id}}}:holds"


def order_states(sale_id: str) -> str:
    """Hash order_id -> last status applied to the Redis counters (makes settle.lua idempotent)."""
    return f"{PREFIX}:{{{sale_id}}}:ost"


def queue_tickets(sale_id: str) -> str:
    """Hash user_id -> "seq:join_ms:admitted_ms": the sale's waiting-room tickets (queue.lua)."""
    return f"{PREFIX}:{{{sale_id}}}:queue"


def idempotency(sale_id: str, user_id: str, key: str) -> str:
    """String: request fingerprint + stored 202 answer for one (sale, user, Idempotency-Key)."""
    return f"{PREFIX}:{{{sale_id}}}:idem:{user_id}:{key}"


def idempotency_pattern(sale_id: str) -> str:
    return f"{PREFIX}:{{{sale_id}}}:idem:*"


def sale_events(sale_id: str) -> str:
    """Pub/sub channel: stock and state changes of one sale."""
    return f"{PREFIX}:{{{sale_id}}}:events"


def sale_id_from_channel(channel: str) -> str:
    """Inverse of sale_events()."""
    return channel[channel.index("{") + 1 : channel.index("}")]


def sale_keys(sale_id: str) -> list[str]:
    """The fixed keys of a sale (idempotency keys are found with idempotency_pattern)."""
    return [sale(sale_id), holds(sale_id), order_states(sale_id), queue_tickets(sale_id)]
