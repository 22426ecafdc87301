"""The three lifecycle machines against the tables in DESIGN §1 "Lifecycles".

The legal edges below are written out by hand from the DESIGN text and the docstring of
``reconciler.lifecycle.machines``; they are deliberately not read from ``Machine.edges``, so a
change to the module that the documents do not also make fails here. Every pair of states not in
a legal table is illegal, self-transitions included.
"""

from __future__ import annotations

import itertools

import pytest

from reconciler import errors
from reconciler.lifecycle import machines

# Where each edge is written down: "design" = DESIGN §1, "docstring" = only in the module docstring
# (the DESIGN text does not list it; the module adds it and says why).
DESIGN = "design"
DOCSTRING = "docstring"

VERSION_STATES = ("DRAFT", "TESTING", "CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED")
VERSION_LEGAL = {
    ("DRAFT", "TESTING"): DESIGN,
    ("TESTING", "CANDIDATE"): DESIGN,
    ("TESTING", "DRAFT"): DESIGN,  # a failed evaluation
    ("CANDIDATE", "APPROVED"): DESIGN,
    ("APPROVED", "DEPRECATED"): DESIGN,
    ("DEPRECATED", "RETIRED"): DESIGN,
}

INSTANCE_STATES = ("PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED")
INSTANCE_LEGAL = {
    ("PROVISIONING", "ACTIVE"): DESIGN,
    ("PROVISIONING", "RETIRED"): DOCSTRING,  # its deployment went away before it ever ran
    ("PROVISIONING", "PAUSED"): DOCSTRING,  # an emergency control holds it before it ever ran
    ("PROVISIONING", "QUARANTINED"): DOCSTRING,
    ("ACTIVE", "PAUSED"): DESIGN,
    ("ACTIVE", "READONLY"): DESIGN,
    ("ACTIVE", "DRAINING"): DESIGN,
    ("ACTIVE", "QUARANTINED"): DESIGN,
    ("PAUSED", "ACTIVE"): DESIGN,  # resume
    ("PAUSED", "PROVISIONING"): DOCSTRING,  # resume of an instance paused before it ever ran
    ("PAUSED", "QUARANTINED"): DOCSTRING,  # a held instance escalated to quarantine
    ("PAUSED", "DRAINING"): DOCSTRING,  # a held instance drained
    ("PAUSED", "RETIRED"): DESIGN,
    ("READONLY", "ACTIVE"): DESIGN,  # resume
    ("READONLY", "QUARANTINED"): DOCSTRING,  # a held instance escalated to quarantine
    ("READONLY", "DRAINING"): DOCSTRING,  # a held instance drained
    ("READONLY", "RETIRED"): DESIGN,
    ("DRAINING", "RETIRED"): DESIGN,
    ("QUARANTINED", "RETIRED"): DESIGN,
}

DEPLOYMENT_STATES = ("PENDING", "ACTIVE", "ROLLING_BACK", "RETIRED")
DEPLOYMENT_LEGAL = {
    ("PENDING", "ACTIVE"): DESIGN,
    ("PENDING", "RETIRED"): DESIGN,  # superseded before activation
    ("ACTIVE", "ROLLING_BACK"): DESIGN,
    ("ACTIVE", "RETIRED"): DOCSTRING,  # superseded or pruned
    ("ROLLING_BACK", "RETIRED"): DESIGN,
}

# key: (machine, name in messages, states, legal edges)
MACHINES = {
    "version": (machines.VERSION, "AgentVersion", VERSION_STATES, VERSION_LEGAL),
    "instance": (machines.INSTANCE, "Instance", INSTANCE_STATES, INSTANCE_LEGAL),
    "deployment": (machines.DEPLOYMENT, "Deployment", DEPLOYMENT_STATES, DEPLOYMENT_LEGAL),
}


def _allowed(key: str, current: str) -> set[str]:
    _, _, _, legal = MACHINES[key]
    return {target for (source, target) in legal if source == current}


LEGAL_CASES = [
    pytest.param(key, current, target, id=f"{key}: {current} -> {target} ({source})")
    for key, (_, _, _, legal) in MACHINES.items()
    for (current, target), source in legal.items()
]

ILLEGAL_CASES = [
    pytest.param(key, current, target, id=f"{key}: {current} -> {target}")
    for key, (_, _, states, legal) in MACHINES.items()
    for current, target in itertools.product(states, repeat=2)
    if (current, target) not in legal
]


@pytest.mark.parametrize("key", list(MACHINES))
def test_each_machine_knows_exactly_the_documented_states(key: str) -> None:
    # The illegal table is the complement over these states, so an extra state would go untested.
    machine, name, states, legal = MACHINES[key]
    assert machine.name == name
    assert set(machine.states) == set(states)
    assert machine.initial == states[0]
    assert all(current in states and target in states for current, target in legal)


def test_version_states_are_in_lifecycle_order() -> None:
    # VERSION_RANK (how far along a version is) is read off this order.
    assert machines.VERSION.states == VERSION_STATES
    rank = machines.VERSION_RANK
    assert rank == {state: i for i, state in enumerate(VERSION_STATES)}


@pytest.mark.parametrize(("key", "current", "target"), LEGAL_CASES)
def test_a_documented_transition_passes_the_check(key: str, current: str, target: str) -> None:
    machine = MACHINES[key][0]
    assert machine.is_legal(current, target)
    assert target in machine.allowed(current)
    machine.check(current, target)


@pytest.mark.parametrize(("key", "current", "target"), ILLEGAL_CASES)
def test_an_undocumented_transition_is_refused_naming_from_to_and_the_allowed_next_states(
    key: str, current: str, target: str
) -> None:
    machine, name, _, _ = MACHINES[key]
    expected_allowed = _allowed(key, current)
    assert not machine.is_legal(current, target)

    with pytest.raises(machines.IllegalTransition) as caught:
        machine.check(current, target)

    exc = caught.value
    assert isinstance(exc, errors.ArmError)
    assert exc.machine == name
    assert exc.current == current
    assert exc.target == target
    assert isinstance(exc.allowed, tuple)
    assert set(exc.allowed) == expected_allowed
    assert len(exc.allowed) == len(expected_allowed)

    head = f"{name} cannot go from {current} to {target}; allowed next states: "
    message = str(exc)
    assert message.startswith(head)
    nexts = message.removeprefix(head)
    if expected_allowed:
        assert set(nexts.split(", ")) == expected_allowed
        assert nexts == ", ".join(exc.allowed)
    else:
        assert nexts == "none (final state)"


@pytest.mark.parametrize(
    ("key", "current", "target", "message"),
    [
        pytest.param(
            "version",
            "CANDIDATE",
            "DRAFT",
            "AgentVersion cannot go from CANDIDATE to DRAFT; allowed next states: APPROVED",
            id="a candidate cannot go back to draft",
        ),
        pytest.param(
            "version",
            "RETIRED",
            "APPROVED",
            "AgentVersion cannot go from RETIRED to APPROVED; allowed next states: none (final state)",
            id="a retired version has nowhere to go",
        ),
        pytest.param(
            "instance",
            "RETIRED",
            "ACTIVE",
            "Instance cannot go from RETIRED to ACTIVE; allowed next states: none (final state)",
            id="a retired instance has nowhere to go",
        ),
        pytest.param(
            "deployment",
            "ROLLING_BACK",
            "ACTIVE",
            "Deployment cannot go from ROLLING_BACK to ACTIVE; allowed next states: RETIRED",
            id="a deployment rolling back cannot become active again",
        ),
    ],
)
def test_the_refusal_reads_as_one_sentence(key: str, current: str, target: str, message: str) -> None:
    with pytest.raises(machines.IllegalTransition) as caught:
        MACHINES[key][0].check(current, target)
    assert str(caught.value) == message


@pytest.mark.parametrize("key", list(MACHINES))
@pytest.mark.parametrize(
    ("current", "target", "named"),
    [
        pytest.param("NOT_A_STATE", "RETIRED", "NOT_A_STATE", id="unknown current state"),
        pytest.param("retired", "RETIRED", "retired", id="state names are case-sensitive"),
        pytest.param("RETIRED", "NOT_A_STATE", "NOT_A_STATE", id="unknown target state"),
    ],
)
def test_a_state_the_machine_does_not_know_is_an_arm_error(key: str, current: str, target: str, named: str) -> None:
    with pytest.raises(errors.ArmError, match=named):
        MACHINES[key][0].check(current, target)


# --- path(): the walk the reconciler takes towards a version's desired state -------------------

UNREACHABLE = "unreachable"

# Every ordered pair of version states, worked out by hand from VERSION_LEGAL.
VERSION_PATHS = {
    ("DRAFT", "DRAFT"): [],
    ("DRAFT", "TESTING"): ["TESTING"],
    ("DRAFT", "CANDIDATE"): ["TESTING", "CANDIDATE"],
    ("DRAFT", "APPROVED"): ["TESTING", "CANDIDATE", "APPROVED"],
    ("DRAFT", "DEPRECATED"): ["TESTING", "CANDIDATE", "APPROVED", "DEPRECATED"],
    ("DRAFT", "RETIRED"): ["TESTING", "CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED"],
    ("TESTING", "DRAFT"): ["DRAFT"],
    ("TESTING", "TESTING"): [],
    ("TESTING", "CANDIDATE"): ["CANDIDATE"],
    ("TESTING", "APPROVED"): ["CANDIDATE", "APPROVED"],
    ("TESTING", "DEPRECATED"): ["CANDIDATE", "APPROVED", "DEPRECATED"],
    ("TESTING", "RETIRED"): ["CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED"],
    ("CANDIDATE", "DRAFT"): UNREACHABLE,
    ("CANDIDATE", "TESTING"): UNREACHABLE,
    ("CANDIDATE", "CANDIDATE"): [],
    ("CANDIDATE", "APPROVED"): ["APPROVED"],
    ("CANDIDATE", "DEPRECATED"): ["APPROVED", "DEPRECATED"],
    ("CANDIDATE", "RETIRED"): ["APPROVED", "DEPRECATED", "RETIRED"],
    ("APPROVED", "DRAFT"): UNREACHABLE,
    ("APPROVED", "TESTING"): UNREACHABLE,
    ("APPROVED", "CANDIDATE"): UNREACHABLE,
    ("APPROVED", "APPROVED"): [],
    ("APPROVED", "DEPRECATED"): ["DEPRECATED"],
    ("APPROVED", "RETIRED"): ["DEPRECATED", "RETIRED"],
    ("DEPRECATED", "DRAFT"): UNREACHABLE,
    ("DEPRECATED", "TESTING"): UNREACHABLE,
    ("DEPRECATED", "CANDIDATE"): UNREACHABLE,
    ("DEPRECATED", "APPROVED"): UNREACHABLE,
    ("DEPRECATED", "DEPRECATED"): [],
    ("DEPRECATED", "RETIRED"): ["RETIRED"],
    ("RETIRED", "DRAFT"): UNREACHABLE,
    ("RETIRED", "TESTING"): UNREACHABLE,
    ("RETIRED", "CANDIDATE"): UNREACHABLE,
    ("RETIRED", "APPROVED"): UNREACHABLE,
    ("RETIRED", "DEPRECATED"): UNREACHABLE,
    ("RETIRED", "RETIRED"): [],  # already there: nothing to walk, so not an error
}


def test_the_path_table_covers_every_pair_of_version_states() -> None:
    assert set(VERSION_PATHS) == set(itertools.product(VERSION_STATES, repeat=2))


def _assert_unreachable(current: str, target: str) -> None:
    with pytest.raises(machines.IllegalTransition) as caught:
        machines.VERSION.path(current, target)
    exc = caught.value
    assert (exc.machine, exc.current, exc.target) == ("AgentVersion", current, target)
    assert set(exc.allowed) == _allowed("version", current)


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        pytest.param(
            current,
            target,
            expected,
            id=f"{current} -> {target}: {expected if expected == UNREACHABLE else ' > '.join(expected) or 'stay'}",
        )
        for (current, target), expected in VERSION_PATHS.items()
    ],
)
def test_the_version_path_is_the_shortest_legal_walk(current: str, target: str, expected: list[str] | str) -> None:
    if expected == UNREACHABLE:
        _assert_unreachable(current, target)
        return
    steps = machines.VERSION.path(current, target)
    assert steps == expected
    # every step of the walk is itself a documented edge
    for source, step in itertools.pairwise([current, *steps]):
        assert (source, step) in VERSION_LEGAL


def test_promoting_a_draft_to_approved_walks_through_testing_and_candidate() -> None:
    assert machines.VERSION.path("DRAFT", "APPROVED") == ["TESTING", "CANDIDATE", "APPROVED"]


def test_a_failed_evaluation_goes_back_to_draft_in_one_step() -> None:
    assert machines.VERSION.path("TESTING", "DRAFT") == ["DRAFT"]


@pytest.mark.parametrize("state", VERSION_STATES)
def test_a_version_already_in_its_desired_state_has_an_empty_path(state: str) -> None:
    assert machines.VERSION.path(state, state) == []


def test_retiring_a_draft_walks_the_whole_lifecycle() -> None:
    assert machines.VERSION.path("DRAFT", "RETIRED") == ["TESTING", "CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED"]


def test_a_candidate_cannot_walk_back_to_draft() -> None:
    _assert_unreachable("CANDIDATE", "DRAFT")


@pytest.mark.parametrize("target", [s for s in VERSION_STATES if s != "RETIRED"])
def test_a_retired_version_cannot_walk_anywhere(target: str) -> None:
    _assert_unreachable("RETIRED", target)


def test_held_states_are_exactly_paused_readonly_and_quarantined() -> None:
    held = machines.HELD_STATES
    assert held == frozenset({"PAUSED", "READONLY", "QUARANTINED"})
    assert held.issubset(INSTANCE_STATES)
