"""k-anonymous release files written outside any ledger, for tests only: the attack and
certificate tests need tables on disk without a charge. The library's one way to publish a
k-anonymous table is :func:`segments.anonymity.job.release_kanon` (through the ledger)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from segments.anonymity import KAnonymousTable, write_certificate, write_table


def write_release(
    folder: str | os.PathLike[str],
    anon: KAnonymousTable,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``table.parquet`` and ``certificate.json`` into a new folder (refused if it holds
    a release already); return the certificate."""
    return write_certificate(folder, anon, write_table(folder, anon), extra)
