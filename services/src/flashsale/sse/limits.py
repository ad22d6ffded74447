"""Admission of stream connections: at most max_clients per process and max_clients_per_addr per
client address, so one address opening thousands of streams cannot take the process down. Pure
bookkeeping; the app turns a refusal into 503/429 problem JSON."""

from __future__ import annotations

PROCESS_FULL = "process_full"
ADDRESS_FULL = "address_full"


class ConnectionLimits:
    def __init__(self, *, max_clients: int, max_per_addr: int) -> None:
        self.max_clients = max_clients
        self.max_per_addr = max_per_addr
        self.total = 0
        self._per_addr: dict[str, int] = {}

    def acquire(self, addr: str) -> str | None:
        """Take a slot for `addr`; None when granted, else the reason it is refused."""
        if self.total >= self.max_clients:
            return PROCESS_FULL
        held = self._per_addr.get(addr, 0)
        if held >= self.max_per_addr:
            return ADDRESS_FULL
        self._per_addr[addr] = held + 1
        self.total += 1
        return None

    def release(self, addr: str) -> None:
        held = self._per_addr.get(addr, 0) - 1
        if held > 0:
            self._per_addr[addr] = held
        else:
            self._per_addr.pop(addr, None)
        self.total -= 1

    def held(self, addr: str) -> int:
        return self._per_addr.get(addr, 0)
