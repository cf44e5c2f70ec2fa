"""The policy file reader: TOML → a validated :class:`~segments.policy.Policy`.

:func:`load_policy` resolves a shipped policy name or a path, parses the TOML and walks the
tree with :class:`PolicyParser`, which checks every key: an unknown key, a negative period, a
purpose without a retention rule or a rule without a clause id raises
:class:`~segments.exceptions.PolicyError` naming the file, the key and the fix.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from segments.exceptions import PolicyError
from segments.policy import (
    ANCHORS,
    CELL_BOUND_TABLES,
    CLAUSE_KINDS,
    EU_EEA,
    FEATURE_NAMES,
    POLICY_NAMES,
    RECIPIENT_KINDS,
    REQUIRED_EXCLUSIONS,
    RETENTION_DATA,
    ClausePromise,
    ExclusionRule,
    Policy,
    PrivacyParameters,
    ProfilingEligibility,
    Purpose,
    Recipient,
    RetentionRule,
)
from segments.schema import PREPARED_CUSTOMERS, PREPARED_LINES, PRODUCT_CATEGORIES
from segments.workspace import SAFE_NAME

__all__ = ["PolicyParser", "load_policy", "resolve_policy_path"]

_SHARE_PREFIXES = ("share_", "line_share_")
_CLAUSE_ID = re.compile(r"[A-Z]{2}-\d+")
#: Kinds a policy may leave empty (its text has no such promise: the rule is the project's).
_OPTIONAL_CLAUSE_KINDS = frozenset(CLAUSE_KINDS) - {"anonymous_release"}
#: Kinds added after policies were written: a file may leave them out (no clause).
_LATER_CLAUSE_KINDS = frozenset({"useful_release"})
#: Optional [privacy] keys written as whole numbers (the others are fractions).
_WHOLE_NUMBER_KEYS = frozenset(
    {"units_norm_bound", "sek_norm_bound", "max_fully_generalised_columns"}
)


def resolve_policy_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The policy file a name (``alloffice``: a bundled policy) or a ``.toml`` path names."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        path = Path(text)
        if path.is_dir():
            raise PolicyError(
                f"policy file {path} is a folder, not a policy file; pass a policy name "
                f"({', '.join(POLICY_NAMES)}) or the path of a .toml policy file"
            )
        if not path.is_file():
            raise PolicyError(
                f"policy file {path} does not exist; pass a policy name "
                f"({', '.join(POLICY_NAMES)}) or the path of a policy file"
            )
        return path
    shipped = resources.files("segments") / "policies" / f"{text}.toml"
    if not shipped.is_file():
        raise PolicyError(
            f"unknown policy {text!r}; the shipped policies are {', '.join(POLICY_NAMES)} "
            "(or pass the path of a .toml policy file)"
        )
    return Path(str(shipped))


def load_policy(name_or_path: str | os.PathLike[str]) -> Policy:
    """Load a shipped policy by name (``"alloffice"``) or a TOML file by path.

    Raises
    ------
    PolicyError
        For an unknown policy name, or a file that breaks a validation rule (naming the
        file, the key and the fix).

    Examples
    --------
    >>> load_policy("offix").controller == Policy.load("offix").controller
    True
    """
    path = resolve_policy_path(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"policy file {path}: not UTF-8 text (byte {exc.start}: {exc.reason}), so not "
            "a TOML policy; pass a policy file, or re-encode it as UTF-8"
        ) from None
    return PolicyParser(path).policy(data)


class PolicyParser:
    """Walks the TOML tree, checking every key; errors name the file, the key and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str, fix: str) -> PolicyError:
        """The error to raise: the file, the key, what is wrong and how to fix it (one line)."""
        return PolicyError(f"policy file {self.path}, key {key!r}: {problem}; fix: {fix}")

    def table(
        self,
        data: Any,
        key: str,
        required: set[str],
        optional: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        """The table at ``key`` with its keys checked: every ``required`` one, others only
        from ``optional``.

        Raises
        ------
        PolicyError
            Not a table, an unknown key (the known ones listed) or a missing one.
        """
        if not isinstance(data, dict):
            raise self.fail(
                key, f"expected a table, got {type(data).__name__}", "make it a [table]"
            )
        unknown = sorted(set(data) - required - set(optional))
        if unknown:
            known = sorted(required | set(optional))
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                "unknown key",
                f"remove it or use one of {known}",
            )
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(
                f"{key}.{missing[0]}" if key else missing[0],
                "missing key",
                "add it (see the shipped policies in segments/policies/)",
            )
        return data

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        """``value`` itself when it is of type ``kind`` (``what`` says so in the error).

        Raises
        ------
        PolicyError
            Another type, or a boolean where a number is expected.
        """
        # bool is a subclass of int in Python; `min_k = true` must not pass as a number.
        is_bool_for_number = isinstance(value, bool) and kind is not bool
        if is_bool_for_number or not isinstance(value, kind):
            raise self.fail(key, f"expected {what}, got {value!r}", f"give {what}")
        return value

    def flag(self, table: Mapping[str, Any], key: str, name: str) -> bool:
        """The optional true/false key ``name`` of the table at ``key`` (absent: false)."""
        return bool(self.typed(table.get(name, False), f"{key}.{name}", bool, "true or false"))

    def flags(self, table: Mapping[str, Any], key: str, *names: str) -> dict[str, bool]:
        """:meth:`flag` for each of ``names``."""
        return {name: self.flag(table, key, name) for name in names}

    def clause_ids(self, value: Any, key: str, *, allow_empty: bool = False) -> tuple[str, ...]:
        """The clause ids a rule cites, as a tuple (the policy file is where they live).

        Raises
        ------
        PolicyError
            Not a list of strings, an empty list (unless ``allow_empty``), or an id that is not
            of the clause-id form.
        """
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(
                key,
                f"expected a list of clause ids, got {value!r}",
                "give a list of ids from POLICY_CLAUSES.md",
            )
        if not value and not allow_empty:
            raise self.fail(key, "a rule without a clause id", "cite the clause it implements")
        bad = [v for v in value if not _CLAUSE_ID.fullmatch(v)]
        if bad:
            raise self.fail(key, f"{bad[0]!r} is not a clause id", "use ids from POLICY_CLAUSES.md")
        return tuple(value)

    def finite(self, value: Any, key: str, what: str) -> Any:
        """Refuse NaN and infinities (TOML has ``nan`` and ``inf``)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"{value!r} is not a finite number", f"give {what}")
        return value

    def name(self, value: str, key: str) -> str:
        """Purpose and recipient names become folder names: data, never paths."""
        if not SAFE_NAME.fullmatch(value):
            raise self.fail(
                key,
                f"name {value!r} is not a safe identifier",
                "use letters, digits, '_' and '-' only, starting with a letter or digit",
            )
        return value

    def nonneg(self, value: Any, key: str, kind: type | tuple[type, ...] = int) -> Any:
        """A finite number of type ``kind`` at zero or above.

        Raises
        ------
        PolicyError
            Another type, NaN or infinite, or negative.
        """
        what = "a non-negative integer" if kind is int else "a non-negative number"
        self.typed(value, key, kind, what)
        self.finite(value, key, what)
        if value < 0:
            raise self.fail(key, f"negative value {value}", f"give {what}")
        return value

    def positive(self, value: Any, key: str, kind: type | tuple[type, ...] = int) -> Any:
        """A finite number of type ``kind`` above zero.

        Raises
        ------
        PolicyError
            Another type, NaN or infinite, or zero or negative.
        """
        what = "a positive integer" if kind is int else "a positive number"
        self.typed(value, key, kind, what)
        self.finite(value, key, what)
        if value <= 0:
            raise self.fail(key, f"value {value} is not positive", f"give {what}")
        return value

    # --- sections ---------------------------------------------------------------------
    def policy(self, data: dict[str, Any]) -> Policy:
        """The whole file as a :class:`Policy`: every section checked, then the rules that
        join them (purposes' recipients, windows within the retention, budget period).

        Raises
        ------
        PolicyError
            The first key that breaks a rule, named with its fix.
        """
        top = self.table(
            data,
            "",
            {
                "name",
                "controller",
                "source",
                "purposes",
                "recipients",
                "destinations",
                "exclusions",
                "profiling_eligibility",
                "privacy",
                "clauses",
            },
            {"org_number", "joint_controllers", "promises"},
        )
        name = self.typed(top["name"], "name", str, "a policy name")
        org = top.get("org_number")
        if org is not None and not re.fullmatch(
            r"\d{6}-\d{4}", self.typed(org, "org_number", str, "a string")
        ):
            raise self.fail(
                "org_number", f"{org!r} is not an organisation number", 'write it as "NNNNNN-NNNN"'
            )
        joint = top.get("joint_controllers", {})
        self.typed(joint, "joint_controllers", dict, "a table of company = org number")
        purposes_raw = self.typed(top["purposes"], "purposes", dict, "a table of purposes")
        if not purposes_raw:
            raise self.fail(
                "purposes", "no purpose declared", "declare at least one [purposes.<name>]"
            )
        purposes = {
            p: self.purpose(self.name(p, f"purposes.{p}"), v) for p, v in purposes_raw.items()
        }
        recipients = {
            r: self.recipient(self.name(r, f"recipients.{r}"), v)
            for r, v in self.typed(top["recipients"], "recipients", dict, "a table").items()
        }
        dest = self.table(top["destinations"], "destinations", {"allowed", "clause_ids"}, {"note"})
        allowed = self.typed(
            dest["allowed"], "destinations.allowed", list, "a list of ISO country codes"
        )
        outside = sorted(set(allowed) - EU_EEA)
        if outside:
            raise self.fail(
                "destinations.allowed",
                f"{outside[0]!r} is not an EU/EEA country code",
                "list only EU/EEA ISO 3166-1 alpha-2 codes",
            )
        exclusions = self.exclusions(top["exclusions"])
        for p in purposes.values():
            if p.exclude_survey_opt_outs and "survey_opt_out" not in exclusions:
                raise self.fail(
                    f"purposes.{p.name}.exclude_survey_opt_outs",
                    "the purpose excludes survey opt-outs but no rule cites a clause for it",
                    "add [exclusions.survey_opt_out] with its clause_ids",
                )
        privacy = self.privacy(top["privacy"], purposes)
        policy = Policy(
            name=name,
            controller=self.typed(top["controller"], "controller", str, "the controller's name"),
            org_number=org,
            joint_controllers=MappingProxyType(dict(joint)),
            source=self.typed(top["source"], "source", str, "the seed file name"),
            purposes=MappingProxyType(purposes),
            recipients=MappingProxyType(recipients),
            allowed_destinations=frozenset(allowed),
            destination_clause_ids=self.clause_ids(
                dest["clause_ids"], "destinations.clause_ids", allow_empty=True
            ),
            exclusions=MappingProxyType(exclusions),
            profiling_eligibility=self.eligibility(top["profiling_eligibility"]),
            privacy=privacy,
            clauses=self.clause_table(top["clauses"]),
            clause_prefix=self.prefix(data),
            path=self.path,
            promises=MappingProxyType(self.promises(top.get("promises", {}))),
        )
        if privacy.budget_window_months < policy.longest_window_months:
            raise self.fail(
                "privacy.budget_window_months",
                f"{privacy.budget_window_months} is shorter than the longest retention window "
                f"({policy.longest_window_months} months)",
                f"set it to at least {policy.longest_window_months}",
            )
        return policy

    def promises(self, data: Any) -> dict[str, ClausePromise]:
        """``[promises]``: per clause id its Swedish quote, English gloss and the audit
        checks that verify it.

        Raises
        ------
        PolicyError
            A key that is not a clause id, or an entry without ``sv`` and ``en``.
        """
        self.typed(data, "promises", dict, "a table of clause id = {sv, en, checks}")
        out = {}
        for clause, text in data.items():
            key = f"promises.{clause}"
            (clause_id,) = self.clause_ids([clause], key)
            entry = self.table(text, key, {"sv", "en"}, {"checks"})
            checks = self.typed(entry.get("checks", []), f"{key}.checks", list, "a list of names")
            out[clause_id] = ClausePromise(
                clause_id,
                self.typed(entry["sv"], f"{key}.sv", str, "the Swedish quote"),
                self.typed(entry["en"], f"{key}.en", str, "an English gloss"),
                tuple(self.typed(c, f"{key}.checks", str, "a check name") for c in checks),
            )
        return out

    def clause_table(self, data: Any) -> Mapping[str, tuple[str, ...]]:
        """``[clauses]``: the clause ids of each kind of rule (read-only).

        Raises
        ------
        PolicyError
            An unknown or missing kind, or an empty list where the kind needs a clause.
        """
        table = self.table(
            data, "clauses", set(CLAUSE_KINDS) - _LATER_CLAUSE_KINDS, _LATER_CLAUSE_KINDS
        )
        return MappingProxyType(
            {
                kind: self.clause_ids(
                    table.get(kind, []),
                    f"clauses.{kind}",
                    allow_empty=kind in _OPTIONAL_CLAUSE_KINDS,
                )
                for kind in CLAUSE_KINDS
            }
        )

    def prefix(self, data: Any) -> str:
        """The one clause-id prefix of the file: a policy cites only its own clauses."""
        found: dict[str, str] = {}

        def walk(value: Any, key: str) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, f"{key}.{k}" if key else k)
            elif isinstance(value, list) and (
                key.endswith("clause_ids") or key.startswith("clauses.")
            ):
                for v in value:
                    found.setdefault(str(v).split("-")[0], key)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{key}[{i}]")

        walk(data, "")
        if len(found) != 1:
            first, second = sorted(found)[:2] if len(found) > 1 else ("", "")
            raise self.fail(
                found.get(second, "clauses"),
                f"clause ids of more than one controller ({first}, {second})"
                if found
                else "no clause id",
                "cite only this controller's clauses (POLICY_CLAUSES.md)",
            )
        return next(iter(found))

    def purpose(self, name: str, data: Any) -> Purpose:
        """``[purposes.<name>]``: one purpose with its columns, retention rules and exclusions.

        Raises
        ------
        PolicyError
            An unknown or missing key, an undeclared column or a broken rule (the name is
            checked by :meth:`policy`).
        """
        key = f"purposes.{name}"
        p = self.table(
            data,
            key,
            {
                "description",
                "clause_ids",
                "legal_basis",
                "profiling",
                "exclude_objectors",
                "customer_columns",
                "line_columns",
                "retention",
            },
            {"exclude_survey_opt_outs", "stop_at_consent_withdrawal"},
        )
        columns = {
            "customers": self.columns(
                p["customer_columns"], f"{key}.customer_columns", PREPARED_CUSTOMERS.names
            ),
            "lines": self.columns(p["line_columns"], f"{key}.line_columns", PREPARED_LINES.names),
        }
        rules_raw = p["retention"]
        if not isinstance(rules_raw, list) or not rules_raw:
            raise self.fail(
                f"{key}.retention",
                "a purpose without a retention rule",
                f"add [[{key}.retention]] tables for 'transactions' and 'customer'",
            )
        rules = tuple(
            self.retention(f"{key}.retention[{i}]", name, r) for i, r in enumerate(rules_raw)
        )
        for data_kind in RETENTION_DATA:
            if not any(r.data == data_kind for r in rules):
                raise self.fail(
                    f"{key}.retention",
                    f"no retention rule for data {data_kind!r}",
                    f'add a [[{key}.retention]] with data = "{data_kind}"',
                )
        flags = self.flags(
            p,
            key,
            "profiling",
            "exclude_objectors",
            "exclude_survey_opt_outs",
            "stop_at_consent_withdrawal",
        )
        if flags["profiling"] and not flags["exclude_objectors"]:
            raise self.fail(
                f"{key}.exclude_objectors",
                "a profiling purpose must exclude objectors",
                "set exclude_objectors = true (objectors are never profiled)",
            )
        return Purpose(
            name=name,
            description=self.typed(p["description"], f"{key}.description", str, "a description"),
            clause_ids=self.clause_ids(p["clause_ids"], f"{key}.clause_ids"),
            legal_basis=self.typed(p["legal_basis"], f"{key}.legal_basis", str, "a legal basis"),
            columns=MappingProxyType(columns),
            retention=rules,
            **flags,
        )

    def columns(self, value: Any, key: str, declared: list[str]) -> tuple[str, ...]:
        """The columns a purpose keeps, in the schema's order (``person_id`` always).

        Raises
        ------
        PolicyError
            Not a list, or a column the schema does not declare.
        """
        self.typed(value, key, list, "a list of column names")
        unknown = [c for c in value if c not in declared]
        if unknown:
            raise self.fail(
                key, f"unknown column {unknown[0]!r}", f"use columns of segments.schema: {declared}"
            )
        return tuple(c for c in declared if c in value or c == "person_id")

    def retention(self, key: str, purpose: str, data: Any) -> RetentionRule:
        """One retention rule of ``purpose``: the data it covers, its anchor and months.

        Raises
        ------
        PolicyError
            An unknown data kind or anchor, or months missing where the rule is not unlimited.
        """
        r = self.table(
            data,
            key,
            {"data", "anchor", "clause_ids"},
            {"months", "unlimited", "categories", "note"},
        )
        kind = r["data"]
        if kind not in RETENTION_DATA:
            raise self.fail(
                f"{key}.data", f"unknown data {kind!r}", f"use one of {list(RETENTION_DATA)}"
            )
        anchor = r["anchor"]
        if anchor not in ANCHORS:
            raise self.fail(
                f"{key}.anchor", f"unknown anchor {anchor!r}", f"use one of {list(ANCHORS)}"
            )
        if kind == "customer" and anchor == "collection":
            raise self.fail(
                f"{key}.anchor",
                "a customer record has no single collection date",
                "use last_order, last_contact or end_of_relationship",
            )
        unlimited = self.flag(r, key, "unlimited")
        if unlimited == ("months" in r):
            raise self.fail(
                f"{key}.months",
                "give either months or unlimited = true",
                "state the period in months (or unlimited = true where the policy says so)",
            )
        months = None if unlimited else self.nonneg(r["months"], f"{key}.months")
        categories = tuple(r.get("categories", []))
        clauses = self.clause_ids(r["clause_ids"], f"{key}.clause_ids")
        period = "unlimited" if months is None else f"{months} months"
        label = f"{purpose}: {kind} {period} from {anchor}"
        return RetentionRule(label, kind, anchor, months, clauses, categories, r.get("note", ""))

    def recipient(self, name: str, data: Any) -> Recipient:
        """``[recipients.<name>]``: who receives releases, of which kind, in which country.

        Raises
        ------
        PolicyError
            An unknown kind or a country that is not an ISO 3166-1 alpha-2 code.
        """
        key = f"recipients.{name}"
        r = self.table(data, key, {"kind", "country", "clause_ids"}, {"description"})
        if r["kind"] not in RECIPIENT_KINDS:
            raise self.fail(
                f"{key}.kind", f"unknown kind {r['kind']!r}", f"use one of {list(RECIPIENT_KINDS)}"
            )
        country = self.typed(r["country"], f"{key}.country", str, "an ISO country code")
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise self.fail(
                f"{key}.country",
                f"{country!r} is not an ISO 3166-1 alpha-2 code",
                'write e.g. "SE"',
            )
        return Recipient(
            name,
            r["kind"],
            country,
            self.clause_ids(r["clause_ids"], f"{key}.clause_ids"),
            r.get("description", ""),
        )

    def exclusions(self, data: Any) -> dict[str, ExclusionRule]:
        """``[exclusions]``: every required exclusion with its clause ids and deadline.

        Raises
        ------
        PolicyError
            A required exclusion missing, or a deadline that is not a positive number of days.
        """
        ex = self.table(data, "exclusions", set(REQUIRED_EXCLUSIONS), {"survey_opt_out"})
        out = {}
        for name, value in ex.items():
            e = self.table(value, f"exclusions.{name}", {"clause_ids"}, {"note", "deadline_days"})
            out[name] = ExclusionRule(
                name,
                self.clause_ids(e["clause_ids"], f"exclusions.{name}.clause_ids"),
                e.get("note", ""),
                self.positive(e.get("deadline_days", 30), f"exclusions.{name}.deadline_days"),
            )
        return out

    def eligibility(self, data: Any) -> ProfilingEligibility:
        """``[profiling_eligibility]``: who may be profiled (the flags that exclude people).

        Raises
        ------
        PolicyError
            A missing or unknown key, or a flag that is not true or false.
        """
        key = "profiling_eligibility"
        e = self.table(
            data,
            key,
            {"clause_ids", "newsletter_subscribers_only"},
            {"exclude_consent_withdrawn", "exclude_marketing_opt_out", "note"},
        )
        flag = self.flags(
            e,
            key,
            "newsletter_subscribers_only",
            "exclude_consent_withdrawn",
            "exclude_marketing_opt_out",
        )
        return ProfilingEligibility(
            self.clause_ids(e["clause_ids"], f"{key}.clause_ids"), note=e.get("note", ""), **flag
        )

    def privacy(self, data: Any, purposes: Mapping[str, Purpose]) -> PrivacyParameters:
        """The ``[privacy]`` table's types and shapes; its values are checked by
        :class:`PrivacyParameters` itself (one place), its refusals named with this file."""
        names = {f.name for f in fields(PrivacyParameters)} - PrivacyParameters.SCOPE_FIELDS
        optional = PrivacyParameters.OPTIONAL_KEYS
        p = self.table(data, "privacy", names - optional, optional)
        k = "privacy."
        num = (int, float)
        self.typed(p["dp_family"], k + "dp_family", str, '"pure" or "zcdp"')
        values: dict[str, Any] = {
            "dp_family": p["dp_family"],
            "delta": float(self.nonneg(p["delta"], k + "delta", num)),
            "suppression_limit": float(
                self.nonneg(p["suppression_limit"], k + "suppression_limit", num)
            ),
            "budget_epsilon": float(self.positive(p["budget_epsilon"], k + "budget_epsilon", num)),
            "private_segments_epsilon": float(
                self.positive(p["private_segments_epsilon"], k + "private_segments_epsilon", num)
            ),
            "survey_score_bounds": tuple(
                int(v) for v in self.bounds(p["survey_score_bounds"], k + "survey_score_bounds")
            ),
            "feature_bounds": self.feature_bounds(p["feature_bounds"]),
        }
        for name in ("min_k", "min_l", "budget_period_months", "budget_window_months"):
            values[name] = self.positive(p[name], k + name)
        for name in ("max_cells_per_person", "cell_units_bound", "private_segments_k"):
            values[name] = self.positive(p[name], k + name)
        values["private_segments_iterations"] = self.positive(
            p["private_segments_iterations"], k + "private_segments_iterations"
        )
        for name in ("spend_bound_sek", "cell_spend_bound_sek"):  # whole SEK, written as a number
            value = self.positive(p[name], k + name, num)
            values[name] = int(value) if float(value).is_integer() else value
        for name in CELL_BOUND_TABLES:
            values[name] = self.category_bounds(p.get(name, {}), name)
        for name in optional - set(CELL_BOUND_TABLES):
            if name in p:
                kind = int if name in _WHOLE_NUMBER_KEYS else num
                value = self.nonneg(p[name], k + name, kind)
                values[name] = value if kind is int else float(value)
        # every category the bounds may key: the built-in taxonomy and any the file names
        named = {c for name in CELL_BOUND_TABLES for c in values[name]}
        values["categories"] = (*PRODUCT_CATEGORIES, *sorted(named - set(PRODUCT_CATEGORIES)))
        longest = max((q.longest_window_months for q in purposes.values()), default=0)
        values["retention_months"] = longest or values["budget_window_months"]
        try:
            return PrivacyParameters(**values)
        except PolicyError as refused:
            raise PolicyError(f"policy file {self.path}, {refused}") from None

    def category_bounds(self, data: Any, key: str) -> Mapping[str, int]:
        """Per-category cell bounds: positive integers keyed by category codes. A category is
        one of the built-in taxonomy or of the taxonomy an ingest declares (a new business's
        own); :class:`PrivacyParameters` checks that each divides the largest bound, and
        :meth:`PrivacyParameters.from_policy` the taxonomy a release keys by."""
        named = set(data) if isinstance(data, dict) else set()
        table = self.table(data, f"privacy.{key}", set(), named)
        out = {}
        for category, value in table.items():
            name = f"privacy.{key}.{category}"
            if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", str(category)):
                raise self.fail(
                    name,
                    "a category code is lower-case letters, digits and _",
                    "use the code the mapping's [products] categories declares",
                )
            out[category] = self.positive(value, name)
        return MappingProxyType(out)

    def bounds(self, value: Any, key: str) -> tuple[float, float]:
        """A public clipping interval ``[lower, upper]`` of finite numbers, lower < upper.

        Raises
        ------
        PolicyError
            Anything else.
        """
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        )
        if not ok or value[0] >= value[1]:
            raise self.fail(
                key,
                f"expected [lower, upper] with lower < upper, got {value!r}",
                "give e.g. [0, 730]",
            )
        return (float(value[0]), float(value[1]))

    def feature_bounds(self, data: Any) -> Mapping[str, tuple[float, float]]:
        """``privacy.feature_bounds``: each feature's public bounds (read-only); shares may be
        left out (they lie in [0, 1] by definition).

        Raises
        ------
        PolicyError
            Not a table, a missing amount or count feature, or a broken interval.
        """
        # A share lies in [0, 1] by definition, a public fact: the shares of another business's
        # categories (segments ingest) may be listed or left out; amounts and counts may not.
        required = {n for n in FEATURE_NAMES if not n.startswith(_SHARE_PREFIXES)}
        if not isinstance(data, dict):
            raise self.fail("privacy.feature_bounds", "expected a table", "make it a [table]")
        extra = {n for n in data if n.startswith(_SHARE_PREFIXES)}
        fb = self.table(data, "privacy.feature_bounds", required, set(FEATURE_NAMES) | extra)
        names = [*FEATURE_NAMES, *sorted(extra - set(FEATURE_NAMES))]
        return MappingProxyType(
            {
                n: self.bounds(fb[n], f"privacy.feature_bounds.{n}") if n in fb else (0.0, 1.0)
                for n in names
            }
        )
