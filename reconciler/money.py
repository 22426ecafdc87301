"""Money as the policy sees it: whole numbers of micro-units (one millionth of the currency unit).

Runtimes send amounts as JSON numbers (``costEstimate``, a cost tick's ``amount``) and envelopes
state budgets in YAML as numbers; the Rego library compares and prints whole numbers only, because
engines add fractions differently (regorus in doubles, OPA as exact decimals, so a budget at the
boundary flips between them) and print them differently. Every amount is turned into micro-units
once, here, where it enters: the decision input (``policy.inputs``), the budgets in the policy's
data (``policy.envelopes``), and each cost tick before it is summed (``decisions.ledger``,
``state.opevents``), so totals are exact sums of whole numbers.

At the bottom of the package with ``clock`` and ``settings``: ``state``, ``policy`` and
``decisions`` all use it.
"""

from __future__ import annotations

__all__ = ["MAX_AMOUNT", "MAX_MICROS", "MICROS", "capped", "micros", "text"]

#: Micro-units in one unit of the currency.
MICROS = 1_000_000

#: The largest single amount (a call's estimate, a cost tick, a budget), in currency units: far
#: past any one call's cost, and in micro-units (10^15) well inside what every engine holds exactly.
MAX_AMOUNT = 1e9

#: The largest whole number the policy takes (2^53 - 1, what every JSON reader holds exactly);
#: spending totals are counted up to it.
MAX_MICROS = 2**53 - 1


def micros(amount: float) -> int:
    """``amount`` (a finite number of currency units, 0 to :data:`MAX_AMOUNT`) in micro-units,
    rounded to the nearest one: 1.5 is 1500000, 0.35 is 350000 (the double nearest 0.35, times a
    million, is 350000.00000000006: the rounding makes it the amount that was written)."""
    return round(amount * MICROS)


def capped(total: int) -> int:
    """A spending total as the policy takes it: at most :data:`MAX_MICROS`."""
    return total if total <= MAX_MICROS else MAX_MICROS


def text(amount_micros: int) -> str:
    """Micro-units as the policy writes them in reasons: at least two decimals, more only where
    they are not zero (1500000 is ``1.50``, 1 is ``0.000001``)."""
    whole, fraction = divmod(amount_micros, MICROS)
    decimals = f"{fraction:06d}".rstrip("0")
    return f"{whole}.{decimals if len(decimals) >= 2 else f'{fraction:06d}'[:2]}"
