"""Release guards: who may receive a release, where it may go, and for which purpose.

The ledger runs :func:`check_release` inside every reservation, before any budget is spent
or any query runs. Each refusal is a :class:`~segments.exceptions.ReleaseRefusedError` that
cites the clauses of its own policy (``[destinations]`` and ``[clauses]`` of the TOML):

* the destination must lie in the EU/EEA and among the policy's allowed destinations;
* a third-party marketing recipient is refused, and a recipient must be declared in the
  policy (``recipient_refusal``);
* a "DP given a non-private segmentation" release goes to internal recipients only (its
  guarantee does not hold end to end, so it may not leave the controller);
* the purpose must be declared in the policy (``purpose_refusal``);
* the guarantee must be a :class:`~segments.policy.Guarantee` and fit the release kind.

The facts come from the policy (a :class:`segments.Policy`, read as it is), never from the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from segments.exceptions import ReleaseRefusedError
from segments.policy import EU_EEA, RECIPIENT_KINDS, Guarantee, Policy, Recipient

__all__ = [
    "EU_EEA",
    "Guarantee",
    "RECIPIENT_KINDS",
    "PolicyFacts",
    "Recipient",
    "check_destination",
    "check_guarantee",
    "check_purpose",
    "check_recipient",
    "check_release",
]


@dataclass(frozen=True)
class PolicyFacts:
    """The facts the guards read, for a ledger guarded without a whole policy.

    The guards and the ledger read a :class:`segments.Policy` itself (no copy of its facts is
    made); this view, with the same attribute names and no budget, is constructed only where
    a release must be guarded without binding a whole policy (the ledger's unit tests and
    doctest). Its destinations are checked against :data:`segments.policy.EU_EEA`.

    Parameters
    ----------
    name : str
        Policy name.
    controller : str
        The controller the policy belongs to.
    recipients : mapping of str to Recipient
        Declared recipients.
    allowed_destinations : frozenset of str
        Country codes releases may go to (intersected with :data:`EU_EEA` by the guard).
    purposes : frozenset of str
        Declared purposes.
    destination_clause_ids : tuple of str
        The policy's clauses on destinations.
    clauses : mapping of str to tuple of str
        The policy's ``[clauses]`` table (:data:`segments.policy.CLAUSE_KINDS`): refusals
        cite only these, so a controller's refusal never names another's promise.
    purpose_clauses : mapping of str to tuple of str
        Each declared purpose's own clauses (``[purposes.NAME].clause_ids``).
    """

    name: str
    controller: str
    recipients: Mapping[str, Recipient] = field(default_factory=dict)
    allowed_destinations: frozenset[str] = EU_EEA
    purposes: frozenset[str] = frozenset()
    destination_clause_ids: tuple[str, ...] = ()
    clauses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    purpose_clauses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def clauses_for(self, kind: str) -> tuple[str, ...]:
        """The policy's clause ids backing ``kind`` (none: the rule is the project's)."""
        return tuple(self.clauses.get(kind, ()))

    def cite(self, kind: str) -> str:
        """The policy's clause ids for ``kind`` as text, or that the rule is the project's."""
        ids = tuple(dict.fromkeys(self.clauses.get(kind, ())))
        return ", ".join(ids) if ids else f"a project rule; policy {self.name!r} has no clause"

    def release_clause_ids(self, purpose: str) -> tuple[str, ...]:
        """Clauses a release for ``purpose`` may cite: the anonymity clause and the purpose's
        (as :meth:`segments.Policy.release_clause_ids`)."""
        ids = (*self.clauses_for("anonymous_release"), *self.purpose_clauses.get(purpose, ()))
        return tuple(dict.fromkeys(ids))


def check_destination(
    destination: str,
    allowed: Iterable[str] = EU_EEA,
    *,
    who: str = "",
    clause_ids: Iterable[str] = (),
) -> None:
    """Refuse a destination outside the EU/EEA or the policy's allowed list.

    ``clause_ids`` are the policy's destination clauses (none: the steward's rule).

    Examples
    --------
    >>> check_destination("SE")
    >>> check_destination("US")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    segments.exceptions.ReleaseRefusedError: release destination 'US' is outside the EU/EEA...
    """
    code = (destination or "").upper()
    clauses = ", ".join(dict.fromkeys(clause_ids)) or "the steward's rule"
    label = f"destination {code!r}" + (f" of recipient {who!r}" if who else "")
    if code not in EU_EEA:
        raise ReleaseRefusedError(
            f"release {label} is outside the EU/EEA; personal data and its releases stay in "
            f"the EU/EEA ({clauses}); send it to an EU/EEA country code (e.g. 'SE')"
        )
    allowed_codes = sorted(code.upper() for code in allowed)
    if code not in allowed_codes:
        raise ReleaseRefusedError(
            f"release {label} is not among the policy's allowed destinations "
            f"{', '.join(allowed_codes)} ({clauses}); choose one of them or "
            "amend the policy"
        )


def check_recipient(recipient: str, policy: Policy | PolicyFacts) -> Recipient:
    """Return the declared recipient; refuse undeclared and third-party marketing ones.

    Refusals cite the policy's ``recipient_refusal`` clauses (and the recipient's own).

    Raises
    ------
    ReleaseRefusedError
        If the recipient is not declared in the policy or is a third-party marketer.
    """
    declared = policy.recipients.get(recipient)
    if declared is None:
        names = ", ".join(sorted(policy.recipients)) or "none"
        raise ReleaseRefusedError(
            f"recipient {recipient!r} is not declared in policy {policy.name!r} (declared: "
            f"{names}); a release records who receives it ({policy.cite('recipient_refusal')}); "
            "declare the recipient in the policy's [recipients] or choose a declared one"
        )
    if declared.kind == "third_party_marketing":
        raise ReleaseRefusedError(
            f"recipient {recipient!r} is a third party for sales or marketing; data is not "
            f"shared with third parties for sales or marketing "
            f"({policy.cite('recipient_refusal')}); choose an internal or external "
            "(non-marketing) recipient"
        )
    return declared


def check_guarantee(
    guarantee: str, kind: str, recipient: Recipient, policy: Policy | PolicyFacts | None = None
) -> None:
    """Refuse an unknown guarantee, a guarantee that does not fit the release kind, and a
    "DP given a non-private segmentation" release to anyone but an internal recipient (the
    policy's ``anonymous_release`` clause).
    """
    if guarantee not in tuple(Guarantee):
        raise ReleaseRefusedError(
            f"release guarantee {str(guarantee)!r} is unknown; state one of "
            f"{', '.join(repr(g.value) for g in Guarantee)}"
        )
    stated = Guarantee(guarantee)
    if kind != stated.kind:
        raise ReleaseRefusedError(
            f"release kind {kind!r} does not fit guarantee {stated.value!r} (expected kind "
            f"{stated.kind!r}); state the guarantee the release actually has"
        )
    if not stated.end_to_end and recipient.kind != "internal":
        raise ReleaseRefusedError(
            f"recipient {recipient.name!r} is {recipient.kind}, but a release that is "
            f"{stated.value!r} does not make anyone anonymous end to end "
            f"({policy.cite('anonymous_release') if policy else 'anonymity'}) and goes to "
            "internal recipients only; key the release by category rules or a private model "
            f"({Guarantee.END_TO_END.value}), or send it to an internal recipient"
        )


def check_purpose(purpose: str, policy: Policy | PolicyFacts) -> None:
    """Refuse a purpose the policy does not declare (its ``purpose_refusal`` clauses)."""
    if purpose not in policy.purposes:
        declared = ", ".join(sorted(policy.purposes)) or "none"
        raise ReleaseRefusedError(
            f"purpose {purpose!r} is not declared in policy {policy.name!r} (declared: "
            f"{declared}); data is processed only for the purposes it was collected for "
            f"({policy.cite('purpose_refusal')}); choose a declared purpose"
        )


def check_release(
    *,
    purpose: str,
    recipient: str,
    destination: str,
    guarantee: str,
    kind: str,
    policy: Policy | PolicyFacts,
) -> Recipient:
    """Run every guard on one release; return the declared recipient.

    Raises
    ------
    ReleaseRefusedError
        On the first guard that fails, citing its clause.

    Examples
    --------
    >>> facts = PolicyFacts(
    ...     name="demo", controller="Demo AB",
    ...     recipients={"purchasing": Recipient("purchasing", "internal", "SE")},
    ...     allowed_destinations=frozenset({"SE"}), purposes=frozenset({"analytics"}))
    >>> check_release(purpose="analytics", recipient="purchasing", destination="SE",
    ...               guarantee="end-to-end ε-DP", kind="dp", policy=facts).kind
    'internal'
    """
    check_purpose(purpose, policy)
    declared = check_recipient(recipient, policy)
    clause_ids = policy.destination_clause_ids
    check_destination(destination, policy.allowed_destinations, clause_ids=clause_ids)
    if declared.country:
        check_destination(
            declared.country,
            policy.allowed_destinations,
            who=declared.name,
            clause_ids=clause_ids,
        )
    check_guarantee(guarantee, kind, declared, policy)
    return declared
