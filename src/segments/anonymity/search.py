"""Optimal full-domain generalisation with a suppression limit.

The search space is the lattice of level vectors, one level per quasi-identifier. A node is
*feasible* when the classes that fail the privacy model hold at most the allowed share of
rows (they are suppressed). Among feasible nodes the search returns the one with the least
loss, ties broken by the total height and then the level vector, so the answer is unique
and the same as brute force over every node (the tests check exactly that).

Speed: each quasi-identifier is encoded once as integer codes; a node's *frequency set*
(distinct code combinations with counts) is rolled up from the smallest already computed
frequency set of a node one step below it, by mapping one column to the next level and
regrouping on a mixed-radix int64 key. Nodes are visited level by level (total height) from
the bottom. Each loss comes with a lower bound that is never above the loss of the node or of any
generalisation of it (for discernibility: a row of a passing class costs at least its class
size, a row of a failing class at least max(its class size, k), since it ends up suppressed,
at cost n, or in a passing class; for the other losses the loss as if nothing were
suppressed); bounds are carried up the lattice as the maximum over a node's specialisations;
once a node's bound exceeds the best loss found, the node and every generalisation of it
are skipped.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from segments._tables import as_polars
from segments.anonymity.hierarchies import Hierarchy
from segments.anonymity.models import PrivacyModel
from segments.exceptions import KAnonymityError

__all__ = [
    "LOSSES",
    "EncodedTable",
    "NodeEvaluation",
    "SearchResult",
    "evaluate_node",
    "optimal_generalisation",
]

Loss = Literal["discernibility", "height", "loss", "precision"]
#: discernibility: sum of squared class sizes, each suppressed row charged the table size;
#: height: sum of the levels; loss: Iyengar's loss metric (share of each generalised value's
#: domain, averaged over cells; suppressed cells count 1); precision: Sweeney's, one minus
#: precision (level / height averaged over cells; suppressed cells count 1).
LOSSES: tuple[str, ...] = ("discernibility", "height", "loss", "precision")
_DENSE_LIMIT = 1 << 16  # key spaces up to this size (or 4x the groups) use bincount, not a sort


@dataclass
class _Frequency:
    """A node's frequency set: the distinct mixed-radix keys of its code rows (QIs at the
    node's levels, then the sensitive code if any, as the last digit), sorted, with counts."""

    keys: np.ndarray  # (groups,) int64, ascending
    counts: np.ndarray  # (groups,) int64


class EncodedTable:
    """A table encoded once for the search: original codes of every quasi-identifier.

    Parameters
    ----------
    df : polars.DataFrame
    hierarchies : mapping of column name to Hierarchy
        One per quasi-identifier, in the order the levels are reported.
    model : PrivacyModel
        Its ``sensitive`` column (if any) is encoded too.

    Raises
    ------
    KAnonymityError
        If a column is missing, a value is missing from its hierarchy, the table is empty or
        smaller than k.
    """

    def __init__(self, df: Any, hierarchies: Mapping[str, Hierarchy], model: PrivacyModel) -> None:
        df = as_polars(df)  # pandas too, as the public functions return it
        self.qis = list(hierarchies)
        self.hierarchies = [hierarchies[q] for q in self.qis]
        self.model = model
        needed = [*self.qis, *([model.sensitive] if model.sensitive else [])]
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise KAnonymityError(
                f"table has no column(s) {missing} named in the hierarchies or the model; "
                f"its columns are {df.columns}"
            )
        if model.sensitive in self.qis:
            raise KAnonymityError(
                f"column {model.sensitive!r} cannot be both a quasi-identifier and the "
                "sensitive attribute; drop its hierarchy or choose another sensitive column"
            )
        if df.height == 0:
            raise KAnonymityError("the table is empty; there is nothing to anonymise")
        self.n_rows = df.height
        if model.k > self.n_rows:
            raise KAnonymityError(
                f"parameter 'k'={model.k} is larger than the table ({self.n_rows} rows); no "
                "generalisation can make classes that large; lower k or add rows"
            )
        columns = {q: h.encode(df[q]) for q, h in zip(self.qis, self.hierarchies, strict=True)}
        self.sensitive_labels: tuple[str, ...] = ()
        if model.sensitive:
            sens = df[model.sensitive].cast(pl.Utf8).fill_null("<null>")
            self.sensitive_labels = tuple(sens.unique().sort().to_list())
            coded = sens.cast(pl.Enum(list(self.sensitive_labels))).to_physical()
            columns["_sensitive"] = coded.to_numpy().astype(np.int64)
        self.heights = tuple(h.height for h in self.hierarchies)
        self._maps = [[h.map_between(a, a + 1) for a in range(h.height)] for h in self.hierarchies]
        self._domain = [[len(h.labels(a)) for a in range(h.height + 1)] for h in self.hierarchies]
        bottom_space = math.prod(self.radices((0,) * len(self.qis)))
        if bottom_space >= 1 << 62:
            raise KAnonymityError(
                f"the quasi-identifiers {self.qis} have {bottom_space:.3g} value combinations, "
                "too many to encode in 64 bits; use fewer quasi-identifiers or coarser "
                "original values"
            )
        self._bottom = self._frequency_of(columns)

    # --- frequency sets ----------------------------------------------------------------
    def radices(self, levels: Sequence[int]) -> list[int]:
        """Domain size of each key digit at a node (QIs, then the sensitive attribute)."""
        sizes = [self._domain[j][lv] for j, lv in enumerate(levels)]
        if self.model.sensitive:
            sizes.append(len(self.sensitive_labels))
        return sizes

    def _frequency_of(self, columns: dict[str, np.ndarray]) -> _Frequency:
        radices = self.radices((0,) * len(self.qis))
        keys = _encode(list(columns.values()), radices)
        return _group(keys, np.ones(self.n_rows, dtype=np.int64), math.prod(radices))

    def bottom(self) -> _Frequency:
        """The frequency set of the ungeneralised table (every level 0)."""
        return self._bottom

    def decode(self, freq: _Frequency, levels: Sequence[int]) -> list[np.ndarray]:
        """The code columns of a node's frequency set (QIs, then the sensitive code)."""
        radices = self.radices(levels)
        out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(radices)
        rest = freq.keys
        for j in range(len(radices) - 1, -1, -1):
            rest, out[j] = np.divmod(rest, radices[j])
        return out

    def roll_up(self, freq: _Frequency, levels: Sequence[int], column: int) -> _Frequency:
        """The frequency set one level higher in ``column`` (``levels`` are the new node's).

        Only the digit of ``column`` changes: the key is split around it, the digit mapped
        to the next level, and the key joined again with the new radix.
        """
        radices = self.radices(levels)
        low_space = math.prod(radices[column + 1 :])
        old_radix = self._domain[column][levels[column] - 1]
        high, rest = np.divmod(freq.keys, old_radix * low_space)
        digit, low = np.divmod(rest, low_space)
        new_digit = self._maps[column][levels[column] - 1][digit]
        keys = (high * radices[column] + new_digit) * low_space + low
        return _group(keys, freq.counts, math.prod(radices))

    def frequency(self, levels: Sequence[int]) -> _Frequency:
        """A node's frequency set computed directly from the bottom."""
        self.check_levels(levels)
        codes = self.decode(self._bottom, (0,) * len(self.qis))
        for j, lv in enumerate(levels):
            codes[j] = self.hierarchies[j].codes(lv)[codes[j]]
        radices = self.radices(levels)
        return _group(_encode(codes, radices), self._bottom.counts, math.prod(radices))

    def check_levels(self, levels: Sequence[int]) -> None:
        """Refuse levels that do not fit the hierarchies (one per column, within its height)."""
        if len(levels) != len(self.qis) or any(
            not 0 <= lv <= h for lv, h in zip(levels, self.heights, strict=False)
        ):
            raise KAnonymityError(
                f"levels {tuple(levels)} do not fit the quasi-identifiers {self.qis} "
                f"(heights {self.heights}); give one level per column within its height"
            )

    # --- per-cell losses ------------------------------------------------------------------
    def cell_loss(self, loss: str, levels: Sequence[int]) -> list[np.ndarray]:
        """Per column, the loss of one cell for each code at the node's level."""
        out = []
        for j, lv in enumerate(levels):
            h = self.hierarchies[j]
            if loss == "loss":
                leaves = h.leaf_counts(lv).astype(np.float64)
                domain = len(h.values)
                out.append((leaves - 1) / (domain - 1) if domain > 1 else np.zeros_like(leaves))
            else:  # precision
                frac = lv / h.height if h.height else 0.0
                out.append(np.full(self._domain[j][lv], frac))
        return out


def _encode(codes: Sequence[np.ndarray], radices: Sequence[int]) -> np.ndarray:
    key = np.zeros(len(codes[0]), dtype=np.int64)
    for column, radix in zip(codes, radices, strict=True):
        key *= radix
        key += column
    return key


def _group(keys: np.ndarray, counts: np.ndarray, space: int) -> _Frequency:
    """Sum counts per distinct key; the result is sorted by key."""
    if space <= max(_DENSE_LIMIT, 4 * len(keys)):
        summed = np.bincount(keys, weights=counts, minlength=space)
        distinct = np.flatnonzero(summed)
        return _Frequency(distinct.astype(np.int64), summed[distinct].astype(np.int64))
    order = np.argsort(keys, kind="stable")  # timsort: roll-ups leave long sorted runs
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return _Frequency(ordered[starts], np.add.reduceat(counts[order], starts).astype(np.int64))


@dataclass(frozen=True)
class NodeEvaluation:
    """What one lattice node gives: classes, suppression, loss and its lower bound."""

    levels: tuple[int, ...]
    feasible: bool
    suppressed: int
    n_classes: int
    smallest_class: int
    loss: float
    lower_bound: float

    @property
    def height(self) -> int:
        """The node's height in the lattice: the sum of its levels."""
        return sum(self.levels)

    def sort_key(self) -> tuple[float, int, tuple[int, ...]]:
        """Order of preference: least loss, then lowest total height, then the level vector."""
        return (self.loss, self.height, self.levels)


def _class_statistics(
    freq: _Frequency, model: PrivacyModel, n_sensitive: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Class sizes, the class index of each group (None: one group per class), distinct
    counts and entropies."""
    if not model.sensitive:
        return freq.counts, None, None, None
    # keys are sorted and the sensitive code is the last digit, so a class is a run
    class_key = freq.keys // n_sensitive
    starts = np.flatnonzero(np.concatenate(([True], class_key[1:] != class_key[:-1])))
    sizes = np.add.reduceat(freq.counts, starts)
    distinct = np.diff(np.append(starts, len(freq.counts)))
    class_of = np.repeat(np.arange(len(starts)), distinct)
    entropy = None
    if model.diversity == "entropy":
        c = freq.counts.astype(np.float64)
        nlogn = np.add.reduceat(c * np.log(c), starts)
        entropy = np.log(sizes) - nlogn / sizes
    return sizes, class_of, distinct, entropy


def _evaluate(
    table: EncodedTable, freq: _Frequency, levels: tuple[int, ...], loss: str
) -> NodeEvaluation:
    model = table.model
    sizes, class_of, distinct, entropy = _class_statistics(freq, model, len(table.sensitive_labels))
    ok = model.classes_ok(sizes, distinct, entropy)
    failing = sizes[~ok]
    suppressed = int(failing.sum())
    n = table.n_rows
    feasible = suppressed <= model.max_suppressed(n)
    if loss == "discernibility":
        failing_squares = int((failing * failing).sum())
        squares = int((sizes * sizes).sum())
        value = float(squares - failing_squares + n * suppressed)
        # in this node or any generalisation of it, a row of a failing class is suppressed
        # (cost n) or in a passing class at least as large as its class now and as k
        bound = float(
            squares - failing_squares + int((failing * np.maximum(failing, model.k)).sum())
        )
    elif loss == "height":
        value = bound = float(sum(levels))
    else:
        per_cell = table.cell_loss(loss, levels)
        codes = table.decode(freq, levels)
        row_loss = np.zeros(len(freq.counts))
        for j, cells in enumerate(per_cell):
            row_loss += cells[codes[j]]
        row_loss /= max(len(per_cell), 1)
        weighted = row_loss * freq.counts
        group_ok = ok if class_of is None else ok[class_of]
        bound = float(weighted.sum() / n)
        value = float((weighted[group_ok].sum() + suppressed) / n)
    return NodeEvaluation(
        levels=levels,
        feasible=feasible,
        suppressed=suppressed,
        n_classes=len(sizes) - len(failing),
        smallest_class=int(sizes[ok].min()) if feasible and len(failing) < len(sizes) else 0,
        loss=value,
        lower_bound=bound,
    )


def evaluate_node(
    table: EncodedTable, levels: Sequence[int], loss: Loss = "discernibility"
) -> NodeEvaluation:
    """Evaluate one node directly (no roll-up, no pruning): used for checks and reports."""
    _check_loss(loss)
    lv = tuple(int(x) for x in levels)
    return _evaluate(table, table.frequency(lv), lv, loss)


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise KAnonymityError(f"parameter 'loss' must be one of {LOSSES}, got {loss!r}")


@dataclass(frozen=True)
class SearchResult:
    """The optimal node and how the search got there."""

    qis: tuple[str, ...]
    levels: dict[str, int]
    loss_name: str
    best: NodeEvaluation
    model: PrivacyModel
    n_rows: int
    lattice_size: int
    evaluated: int
    seconds: float

    @property
    def loss(self) -> float:
        """The information loss of the best node."""
        return self.best.loss

    @property
    def suppressed(self) -> int:
        """Rows the best node suppresses."""
        return self.best.suppressed

    def to_dict(self) -> dict[str, Any]:
        """The search's result and evidence as a JSON-able dict."""
        return {
            "quasi_identifiers": list(self.qis),
            "levels": dict(self.levels),
            "loss_function": self.loss_name,
            "loss": self.best.loss,
            "suppressed_rows": self.best.suppressed,
            "rows": self.n_rows,
            "classes": self.best.n_classes,
            "smallest_class": self.best.smallest_class,
            "lattice_size": self.lattice_size,
            "nodes_evaluated": self.evaluated,
        }


def _lattice_by_height(heights: Sequence[int]) -> list[list[tuple[int, ...]]]:
    by_height: list[list[tuple[int, ...]]] = [[] for _ in range(sum(heights) + 1)]
    for node in itertools.product(*(range(h + 1) for h in heights)):
        by_height[sum(node)].append(node)
    return by_height


def optimal_generalisation(
    df: Any,
    hierarchies: Mapping[str, Hierarchy] | None = None,
    model: PrivacyModel | None = None,
    *,
    loss: Loss = "discernibility",
) -> SearchResult:
    """Find the full-domain generalisation with the least loss that satisfies ``model``.

    Parameters
    ----------
    df : polars.DataFrame or EncodedTable
        The table (or one already encoded, to search it again with another loss).
    hierarchies : mapping of column name to Hierarchy
        One per quasi-identifier. Not needed with an EncodedTable.
    model : PrivacyModel
        k, suppression limit, optional l-diversity. Not needed with an EncodedTable.
    loss : {'discernibility', 'height', 'loss', 'precision'}

    Returns
    -------
    SearchResult

    Raises
    ------
    KAnonymityError
        If no node satisfies the model within the suppression limit, k exceeds the table,
        or a value is missing from its hierarchy.

    Examples
    --------
    >>> import polars as pl
    >>> from segments.anonymity.hierarchies import Hierarchy
    >>> h = Hierarchy("age", [["31", "30-39", "*"], ["35", "30-39", "*"], ["42", "40-49", "*"]])
    >>> df = pl.DataFrame({"age": ["31", "35", "42", "42"]})
    >>> res = optimal_generalisation(df, {"age": h}, PrivacyModel(k=2))
    >>> res.levels, res.loss
    ({'age': 1}, 8.0)
    """
    _check_loss(loss)
    started = time.perf_counter()
    if isinstance(df, EncodedTable):
        table = df
    else:
        if hierarchies is None or model is None:
            raise KAnonymityError("give 'hierarchies' and 'model' with a DataFrame")
        table = EncodedTable(df, hierarchies, model)
    by_height = _lattice_by_height(table.heights)
    bound: dict[tuple[int, ...], float] = {}
    best: NodeEvaluation | None = None
    evaluated = 0
    previous: dict[tuple[int, ...], _Frequency] = {}
    for nodes in by_height:
        current: dict[tuple[int, ...], _Frequency] = {}
        for node in nodes:
            inherited = bound.pop(node, -math.inf)
            if best is not None and _exceeds(inherited, best.loss):
                _push_bound(bound, node, table.heights, inherited)
                continue
            freq = _freq_for(table, node, previous)
            evaluation = _evaluate(table, freq, node, loss)
            evaluated += 1
            current[node] = freq
            _push_bound(bound, node, table.heights, max(inherited, evaluation.lower_bound))
            if evaluation.feasible and (best is None or evaluation.sort_key() < best.sort_key()):
                best = evaluation
        previous = current
    if best is None:
        raise KAnonymityError(_unsatisfiable_message(table))
    return SearchResult(
        qis=tuple(table.qis),
        levels=dict(zip(table.qis, best.levels, strict=True)),
        loss_name=loss,
        best=best,
        model=table.model,
        n_rows=table.n_rows,
        lattice_size=sum(len(n) for n in by_height),
        evaluated=evaluated,
        seconds=time.perf_counter() - started,
    )


def _exceeds(bound: float, best: float) -> bool:
    # a small relative margin so float rounding never prunes a node that ties the best
    return bound > best + 1e-9 * max(1.0, abs(best))


def _push_bound(
    bound: dict[tuple[int, ...], float], node: tuple[int, ...], heights: Sequence[int], value: float
) -> None:
    for j, h in enumerate(heights):
        if node[j] < h:
            up = node[:j] + (node[j] + 1,) + node[j + 1 :]
            if value > bound.get(up, -math.inf):
                bound[up] = value


def _freq_for(
    table: EncodedTable, node: tuple[int, ...], previous: Mapping[tuple[int, ...], _Frequency]
) -> _Frequency:
    if not any(node):
        return table.bottom()
    best_parent: tuple[int, _Frequency, int] | None = None
    for j, lv in enumerate(node):
        if lv:
            parent = node[:j] + (lv - 1,) + node[j + 1 :]
            freq = previous.get(parent)
            if freq is not None and (best_parent is None or len(freq.keys) < best_parent[0]):
                best_parent = (len(freq.keys), freq, j)
    if best_parent is None:  # cannot happen: an unpruned node has every parent evaluated
        return table.frequency(node)
    return table.roll_up(best_parent[1], node, best_parent[2])


def _unsatisfiable_message(table: EncodedTable) -> str:
    top = tuple(table.heights)
    ev = _evaluate(table, table.frequency(top), top, "height")
    m = table.model
    return (
        f"no generalisation satisfies {m.name} with at most {m.suppression_limit:.1%} of the "
        f"{table.n_rows} rows suppressed: even every quasi-identifier fully generalised "
        f"({dict(zip(table.qis, top, strict=True))}) leaves {ev.suppressed} rows in failing "
        "classes; lower k or l, raise the suppression limit, or add rows"
    )
