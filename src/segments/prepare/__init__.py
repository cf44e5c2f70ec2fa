"""The prepare stage: from the raw tables to pseudonymised, purpose-scoped frames.

Modules, in data-flow order:

- :mod:`~segments.prepare.pseudonym`: keyed HMAC pseudonyms and the steward's key;
- :mod:`~segments.prepare.subject_log`: the subject request log (erasures, restrictions);
- :mod:`~segments.prepare.frames`: ``prepare`` and ``read_prepared`` (retention, exclusions,
  minimisation, person linkage, the policy report);
- :mod:`~segments.prepare.retention` and :mod:`~segments.prepare.subjects`: purges and
  data-subject requests applied to everything prepare wrote;
- :mod:`~segments.prepare.history`: the raw tables rewound to an earlier day.

``from segments.prepare import prepare, read_prepared, ...`` keeps working; the names are
loaded lazily, so importing the key or log modules does not import the whole stage. The
package exports what an analyst calls (tables come back as pandas); the stage's polars
helpers (``link_persons``, ``person_table``, ``load_raw_tables``) stay in
:mod:`segments.prepare.frames` for the other stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segments._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers
    from segments.prepare.frames import (
        ERASED_EARLIER as ERASED_EARLIER,
    )
    from segments.prepare.frames import (
        PolicyReport as PolicyReport,
    )
    from segments.prepare.frames import (
        RuleOutcome as RuleOutcome,
    )
    from segments.prepare.frames import (
        prepare as prepare,
    )
    from segments.prepare.frames import (
        read_prepared as read_prepared,
    )

_EXPORTS: dict[str, tuple[str, ...]] = {
    "segments.prepare.frames": (
        "ERASED_EARLIER",
        "PolicyReport",
        "RuleOutcome",
        "prepare",
        "read_prepared",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
