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

from collections.abc import Iterable

from segments.exceptions import PolicyError, ReleaseRefusedError
from segments.policy import EU_EEA, RECIPIENT_KINDS, Guarantee, Policy, Recipient

__all__ = [
    "EU_EEA",
    "Guarantee",
    "RECIPIENT_KINDS",
    "Recipient",
    "check_destination",
    "check_guarantee",
    "check_purpose",
    "check_recipient",
    "check_release",
]


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


def check_recipient(recipient: str, policy: Policy) -> Recipient:
    """Return the declared recipient; refuse undeclared and third-party marketing ones.

    Refusals cite the policy's ``recipient_refusal`` clauses; an undeclared recipient is
    refused by :meth:`segments.Policy.recipient`, the one owner of that message.

    Raises
    ------
    ReleaseRefusedError
        If the recipient is not declared in the policy or is a third-party marketer.
    """
    declared = policy.recipient(recipient)
    if declared.kind == "third_party_marketing":
        raise ReleaseRefusedError(
            f"recipient {recipient!r} is a third party for sales or marketing; data is not "
            f"shared with third parties for sales or marketing "
            f"({policy.cite('recipient_refusal')}); choose an internal or external "
            "(non-marketing) recipient"
        )
    return declared


def check_guarantee(
    guarantee: str, kind: str, recipient: Recipient, policy: Policy | None = None
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


def check_purpose(purpose: str, policy: Policy) -> None:
    """Refuse a purpose the policy does not declare (its ``purpose_refusal`` clauses), with
    :meth:`segments.Policy.purpose`'s message, as a refused release."""
    try:
        policy.purpose(purpose)
    except PolicyError as undeclared:
        raise ReleaseRefusedError(str(undeclared)) from None


def check_release(
    *,
    purpose: str,
    recipient: str,
    destination: str,
    guarantee: str,
    kind: str,
    policy: Policy,
) -> Recipient:
    """Run every guard on one release; return the declared recipient.

    Raises
    ------
    ReleaseRefusedError
        On the first guard that fails, citing its clause.

    Examples
    --------
    >>> policy = Policy.load("alloffice")
    >>> check_release(purpose="statistics", recipient="purchasing", destination="SE",
    ...               guarantee="end-to-end ε-DP", kind="dp", policy=policy).kind
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
