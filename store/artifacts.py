"""A changed artifact that is the same as another artifact of the parent step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SameAs:
    """In the changes of a step (:func:`gonio.store.state.encode_changes`), an artifact whose
    content is the parent step's artifact ``name``: the new manifest points to the same blob,
    which is not encoded, hashed or written again. A new table that keeps a column of
    another table (index's ``indexed`` keeps the shoeboxes of ``strong``, ~21 MB on a
    120-image sweep) stores it so."""

    name: str
