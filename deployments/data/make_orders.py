"""Generate orders.csv, the demo dataset of the example deployment (deterministic).

python deployments/data/make_orders.py      # rewrites deployments/data/orders.csv
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROWS = 3000
SEED = 20240101

PREFIXES = [
    "Acme",
    "Northwind",
    "Blue Harbor",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Aperture",
    "Black Mesa",
    "Monarch",
    "Pied Piper",
    "Duff",
    "Sterling",
    "Bluth",
    "Dunder",
]
SUFFIXES = [
    "Trading",
    "Foods",
    "Logistics",
    "Labs",
    "Retail",
    "Industries",
    "Supplies",
    "GmbH",
    "SARL",
    "Ltd",
    "Inc",
    "Partners",
]
COUNTRIES = [
    ("DE", 18),
    ("FR", 15),
    ("GB", 14),
    ("US", 22),
    ("NL", 7),
    ("ES", 8),
    ("IT", 8),
    ("SE", 4),
    ("PL", 4),
]
CURRENCY = {"GB": "GBP", "US": "USD", "SE": "SEK", "PL": "PLN"}
STATUSES = [("delivered", 70), ("shipped", 15), ("processing", 10), ("cancelled", 5)]


def main() -> None:
    rng = random.Random(SEED)
    customers = sorted({f"{rng.choice(PREFIXES)} {rng.choice(SUFFIXES)}" for _ in range(400)})
    home = {name: _weighted(rng, COUNTRIES) for name in customers}
    start = datetime(2024, 1, 1, tzinfo=UTC)
    moments = sorted(rng.uniform(0, 366 * 86400) for _ in range(ROWS))
    out = Path(__file__).with_name("orders.csv")
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(
            ["order_id", "customer", "country", "amount", "currency", "status", "ordered_at"]
        )
        for i, seconds in enumerate(moments, start=1):
            customer = rng.choice(customers)
            amount = round(rng.lognormvariate(4.2, 0.9), 2)
            ordered_at = (start + timedelta(seconds=int(seconds))).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow(
                [
                    100000 + i,
                    customer,
                    home[customer],
                    f"{amount:.2f}",
                    CURRENCY.get(home[customer], "EUR"),
                    _weighted(rng, STATUSES),
                    ordered_at,
                ]
            )


def _weighted(rng: random.Random, choices: list[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


if __name__ == "__main__":
    main()
