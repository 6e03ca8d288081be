#!/usr/bin/env python3
"""The peer of `crm-local bench --peer` (issue 22): the Python `eventsourcing`
library (9.5, pinned in scripts/requirements-dev.txt) on SQLite, doing what
that library does per command: load the aggregate, decide, save.

It registers N customers, applies 4 commands to each (profile, consent, cart,
order: one event each, load-decide-save per command), then reads every event
back from the application's recorder in pages of 1 000 (its notification
log, without folding them). No HTTP, no projections, no encryption: a
store's bare command path, with the library's own SQLite settings (WAL)
except one: `synchronous` is NORMAL, as in crm-local's store, where the
library's default FULL waits for the disk on every commit (about 250
commits/s on this machine's disk; `--synchronous FULL` to measure that).
Prints one JSON object on stdout:

    {"customers": N, "events": E, "command_seconds": s, "events_per_second": r,
     "read_seconds": s, "read_events_per_second": r, "library": "eventsourcing 9.5.0"}

Usage: peer_bench.py [--customers N] [--db PATH] [--synchronous NORMAL|FULL]
"""

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from importlib.metadata import version
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Customer(Aggregate):
    @event("Registered")
    def __init__(self, email: str):
        self.email = email
        self.profile = {}
        self.consents = []
        self.cart = []
        self.orders = []

    @event("ProfileUpdated")
    def update_profile(self, first_name: str, city: str):
        self.profile = {"first_name": first_name, "city": city}

    @event("ConsentGranted")
    def grant_consent(self, channel: str, purpose: str):
        self.consents.append((channel, purpose))

    @event("ItemAddedToCart")
    def add_to_cart(self, sku: str, quantity: int, price_minor: int):
        self.cart.append((sku, quantity, price_minor))

    @event("OrderPlaced")
    def place_order(self, order_id: str, total_minor: int):
        self.orders.append((order_id, total_minor))
        self.cart = []


class Customers(Application[UUID]):
    def register(self, email: str) -> UUID:
        customer = Customer(email=email)
        self.save(customer)
        return customer.id

    def command(self, customer_id: UUID, decide) -> None:
        customer = self.repository.get(customer_id)
        decide(customer)
        self.save(customer)


def run(customers: int, db: str) -> dict:
    app = Customers(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": db,
        }
    )
    started = time.perf_counter()
    ids = [app.register(f"peer-{i}@example.com") for i in range(customers)]
    for i, customer_id in enumerate(ids):
        app.command(customer_id, lambda c: c.update_profile(first_name=f"Peer{i}", city="Lyon"))
        app.command(customer_id, lambda c: c.grant_consent(channel="email", purpose="marketing"))
        app.command(customer_id, lambda c: c.add_to_cart(sku="SKU-1", quantity=2, price_minor=1250))
        app.command(customer_id, lambda c: c.place_order(order_id=f"o-{i}", total_minor=2500))
    command_seconds = time.perf_counter() - started
    events = customers * 5

    started = time.perf_counter()
    read = 0
    start = 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=1000)
        if not page:
            break
        read += len(page)
        start = page[-1].id + 1
    read_seconds = time.perf_counter() - started
    if read != events:
        raise SystemExit(f"peer_bench: read {read} events back, stored {events}")
    return {
        "library": f"eventsourcing {version('eventsourcing')}",
        "customers": customers,
        "events": events,
        "command_seconds": round(command_seconds, 3),
        "events_per_second": round(events / command_seconds, 1),
        "read_seconds": round(read_seconds, 3),
        "read_events_per_second": round(read / read_seconds, 1) if read_seconds > 0 else None,
    }


def with_synchronous(mode: str) -> None:
    """Every SQLite connection opened from now on runs `PRAGMA synchronous = mode`."""
    connect = sqlite3.connect

    def connect_with_mode(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.execute(f"PRAGMA synchronous = {mode}")
        return conn

    sqlite3.connect = connect_with_mode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--db", help="the SQLite file (default: a new temporary one)")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    with_synchronous(args.synchronous)
    if args.customers < 1:
        parser.error("--customers must be 1 or more")
    if args.db:
        result = run(args.customers, args.db)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.customers, os.path.join(tmp, "peer.db"))
    result["synchronous"] = args.synchronous
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
