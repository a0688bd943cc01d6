"""The SPEC text form: parsing, printing, round-trips, and positioned errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimlab.schedules import (
    constant,
    cosine,
    cosine_restarts,
    exponential,
    inverse_sqrt,
    join,
    linear,
    multistep,
    one_cycle,
    polynomial,
    scale,
    step_decay,
    warmup,
    warmup_stable_decay,
)
from optimlab.schedules.spec import GRAMMAR, parse

PARSES = [
    ("constant(0.1)", constant(0.1)),
    ("  cosine( 3e-4 ,10000 )  ", cosine(3e-4, 10000)),
    ("cosine(3e-4, 1e4, final_lr=3e-5)", cosine(3e-4, 10000, final_lr=3e-5)),
    ("cosine(lr=1, steps=10)", cosine(1.0, 10)),
    ("cosine(1, 10,)", cosine(1.0, 10)),
    ("linear(.5, 10, final_lr=+0.25)", linear(0.5, 10, 0.25)),
    ("multistep(0.1, [30, 60,], 0.1)", multistep(0.1, [30, 60], 0.1)),
    ("multistep(0.1, [], 0.1)", multistep(0.1, [], 0.1)),
    ("step_decay(1E-1, 30, 0.5)", step_decay(0.1, 30, 0.5)),
    ("polynomial(0.1, 100, power=2)", polynomial(0.1, 100, 2.0)),
    ("inverse_sqrt(0.1, 100, offset=100)", inverse_sqrt(0.1, 100, 100)),
    ("scale(exponential(1, 0.9), 0.1)", scale(exponential(1.0, 0.9), 0.1)),
    (
        "warmup(500, cosine(3e-4, 9500, final_lr=3e-5))",
        warmup(500, cosine(3e-4, 9500, final_lr=3e-5)),
    ),
    (
        "join([warmup(10, constant(1)), linear(1, 90)], [10])",
        join([warmup(10, constant(1.0)), linear(1.0, 90)], [10]),
    ),
    ("one_cycle(0.1, 1000, anneal='linear')", one_cycle(0.1, 1000, anneal="linear")),
    ('one_cycle(0.1, 1000, anneal="linear")', one_cycle(0.1, 1000, anneal="linear")),
    ("one_cycle(0.1, 1000, three_phase=True)", one_cycle(0.1, 1000, three_phase=True)),
    ("cosine_restarts(0.1, 10, 2)", cosine_restarts(0.1, 10, 2)),
    (
        "warmup_stable_decay(1e-3, 100, 800, 100, decay='linear')",
        warmup_stable_decay(1e-3, 100, 800, 100, decay="linear"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSES, ids=[p[0] for p in PARSES])
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (cosine(3e-4, 9500, 3e-5), "cosine(0.0003, 9500, final_lr=3e-05)"),
        (cosine(1, 10), "cosine(1.0, 10)"),  # the default final_lr is left out
        (cosine(1, 10, final_lr=0), "cosine(1.0, 10)"),
        (multistep(0.1, (30, 60), 0.1), "multistep(0.1, [30, 60], 0.1)"),
        (warmup(5, constant(1), start_lr=0.1), "warmup(5, constant(1.0), start_lr=0.1)"),
        (0.5 * constant(1.0), "scale(constant(1.0), 0.5)"),
        (constant(1.0) * 0.5, "scale(constant(1.0), 0.5)"),
        (constant(1.0).scale(2), "scale(constant(1.0), 2.0)"),
        (
            one_cycle(0.1, 100, anneal="linear", three_phase=True),
            "one_cycle(0.1, 100, anneal='linear', three_phase=True)",
        ),
    ],
)
def test_spec_text(schedule, text):
    assert schedule.spec == str(schedule) == repr(schedule) == text


# --- errors: ValueError with the character position ---------------------------------

ERRORS = [
    ("cosine(3e-4, 10", "expected ')' at position 15 in 'cosine(3e-4, 10' (found end of text)"),
    ("cosine(3e-4 10)", "expected ')' at position 12 in 'cosine(3e-4 10)' (found '1')"),
    ("cosin(1, 10)", "unknown schedule 'cosin' (known: constant, cosine,"),
    ("cosin(1, 10)", "did you mean 'cosine'? at position 0"),
    ("cosine(1, 10))", "unexpected text after the schedule at position 13"),
    ("cosine", "expected '(' at position 6 in 'cosine' (found end of text)"),
    ("", "expected a value at position 0 in '' (found end of text)"),
    ("   ", "expected a value at position 3"),
    ("3", "expected a schedule such as 'cosine(0.1, 1000)' at position 0"),
    ("[cosine(1, 10)]", "expected a schedule such as"),
    ("cosine(1, @)", "expected a value at position 10 in 'cosine(1, @)' (found '@')"),
    ("cosine(1, 10, final_lr=)", "expected a value at position 23"),
    ("cosine(lr=1, 10)", "cosine(): positional argument after keyword arguments at position 13"),
    ("cosine(1, 10, final_lr=1, final_lr=2)", "argument 'final_lr' given twice at position 26"),
    ("cosine(1, 10, steps=3)", "cosine(): multiple values for argument 'steps' at position 0"),
    ("cosine(1, 10, foo=3)", "cosine(): got an unexpected keyword argument 'foo' at position 0"),
    ("cosine(1)", "cosine(): missing a required argument: 'steps' at position 0"),
    ("constant(1, 2)", "constant(): too many positional arguments at position 0"),
    ("cosine(1, 0)", "cosine(): steps must be a positive integer, got steps=0 at position 0"),
    (
        "warmup(10, cosine(1, 0))",
        "cosine(): steps must be a positive integer, got steps=0 at position 11",
    ),
    ("warmup(10, 0.1)", "warmup(): then must be a schedule, got then=0.1 at position 0"),
    ("cosine([1], 10)", "lr must be a non-negative number, got lr=[1]"),
    ("cosine(-1, 10)", "lr must be a non-negative number, got lr=-1"),
    ("multistep(0.1, [60, 30], 0.1)", "milestones must be a strictly increasing list"),
    ("join([constant(1), constant(2)], [])", "boundaries must have len(schedules) - 1 = 1 entries"),
    ("join([constant(1) constant(2)], [1])", "expected ']' at position 18"),
    ("one_cycle(1, 100, anneal='cos)", "unterminated string, expected a closing ' at position 25"),
    ("one_cycle(1, 100, anneal='sin')", "anneal must be one of 'cos', 'linear', got anneal='sin'"),
    ("one_cycle(1, 100, three_phase=true)", "unknown schedule 'true'"),
    ("cosine(1, 10) # comment", "unexpected text after the schedule at position 14"),
    ("cosine(1, 1e400)", "number 1e400 is too large for a float (max 1.8e308) at position 10"),
    ("cosine(1e999, 10)", "number 1e999 is too large for a float (max 1.8e308) at position 7"),
    ("cosine(-1e999, 10)", "number -1e999 is too large for a float (max 1.8e308) at position 7"),
    (
        "cosine(1, " + "9" * 400 + ")",
        "number 999999999999... (400 characters) is too large for a float (max 1.8e308) "
        "at position 10",
    ),
    ("cosine(1, " + "9" * 5000 + ")", "(5000 characters) is too large for a float"),
    ("warmup(5, scale(constant(1e308), 10))", "warmup(): scale(constant(1e+308), 10.0) at step 0"),
    ("scale(" * 60 + "constant(1)" + ", 1)" * 60, "nested deeper than 50 levels"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_parse_errors(text, message):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_long_text_is_shown_around_the_error():
    text = "join([" + "constant(1), " * 50 + "constant(1) constant(2)], [1])"
    with pytest.raises(ValueError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"expected ']' at position {text.index('constant(2)')} in ...'")
    assert "constant(1) constant(2)" in message and len(message) < 200


@pytest.mark.parametrize("value", [None, 3, b"cosine(1, 10)"])
def test_parse_wants_text(value):
    with pytest.raises(ValueError, match="spec must be a string"):
        parse(value)


def test_parse_never_evaluates_python():
    with pytest.raises(ValueError, match="unknown schedule '__import__'"):
        parse("__import__('os')")


def test_grammar_lists_every_constructor_signature():
    for name in ("cosine(lr, steps, final_lr=0.0)", "join(schedules, boundaries)"):
        assert name in GRAMMAR
    assert "warmup_stable_decay(lr, warmup_steps, stable_steps, decay_steps," in GRAMMAR


# --- hypothesis: spec -> schedule -> spec ------------------------------------------

lrs = st.floats(0, 10, allow_nan=False, allow_infinity=False)
steps = st.integers(1, 10**6)
gammas = st.floats(1e-6, 1.0, allow_nan=False)


@st.composite
def increasing(draw, max_size=5):
    values = sorted(draw(st.sets(st.integers(1, 10**5), max_size=max_size)))
    return values


simple = st.one_of(
    st.builds(constant, lrs),
    st.builds(step_decay, lrs, steps, gammas),
    st.builds(multistep, lrs, increasing(), gammas),
    st.builds(exponential, lrs, gammas),
    st.builds(cosine, lrs, steps, lrs),
    st.builds(linear, lrs, steps, lrs),
    st.builds(polynomial, lrs, steps, st.floats(0.01, 5), lrs),
    st.builds(inverse_sqrt, lrs, steps, st.integers(0, 10**5)),
    st.builds(cosine_restarts, lrs, steps, st.integers(1, 4), lrs),
    st.builds(
        one_cycle,
        lrs,
        st.integers(100, 10**5),
        st.floats(0.05, 0.45),
        st.floats(1, 100),
        st.floats(1, 1e5),
        st.sampled_from(["cos", "linear"]),
        st.booleans(),
    ),
    st.builds(
        warmup_stable_decay,
        lrs,
        st.integers(0, 1000),
        st.integers(0, 1000),
        steps,
        lrs,
        st.sampled_from(["cosine", "linear"]),
    ),
)


@st.composite
def joined(draw, children):
    pieces = draw(st.lists(children, min_size=1, max_size=3))
    bounds = sorted(
        draw(st.sets(st.integers(1, 10**5), min_size=len(pieces) - 1, max_size=len(pieces) - 1))
    )
    return join(pieces, bounds)


schedules = st.recursive(
    simple,
    lambda children: st.one_of(
        joined(children),
        st.builds(warmup, steps, children, lrs),
        st.builds(scale, children, st.floats(0, 10)),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(schedules, st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_spec_round_trip(schedule, probe_steps):
    text = schedule.spec
    again = parse(text)
    assert again == schedule
    assert hash(again) == hash(schedule)
    assert again.spec == text
    assert [again(t) for t in probe_steps] == [schedule(t) for t in probe_steps]
