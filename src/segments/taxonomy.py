"""The built-in product taxonomy: a public fact that the policy, the schema and every release
key by. It sits in its own module so that reading a policy's types (``segments.policy``)
loads no table library."""

from __future__ import annotations

__all__ = ["PRODUCT_CATEGORIES"]

#: The product categories of the synthetic retailers (an ingested export declares its own).
PRODUCT_CATEGORIES = (
    "paper",
    "toner_ink",
    "writing",
    "filing_archiving",
    "desk_accessories",
    "coffee_pantry",
    "cleaning_hygiene",
    "furniture",
    "it_accessories",
    "packaging_shipping",
)
