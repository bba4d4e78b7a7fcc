"""The seed's data, which every part of the demo writes (`make demo` and the demo setup): its
employees Alice, Bob and Charlie, its Redis users, and the positions generated employees get."""

from __future__ import annotations

SEED_EMPLOYEES = (("Alice", "Manager", 90000), ("Bob", "Developer", 80000), ("Charlie", "Analyst", 70000))
SEED_ROWS = ", ".join(f"('{name}', '{position}', {salary})" for name, position, salary in SEED_EMPLOYEES)
SEED_KEYS = {"user:1000": "Alice", "user:1001": "Bob", "user:1002": "Charlie"}
POSITIONS = ("Engineer", "Analyst", "Designer", "Support", "Sales")
