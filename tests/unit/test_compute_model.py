"""Run time learnt per device model from the work models do, carried to unseen models."""

from __future__ import annotations

import numpy as np
import pytest

from anypu.protos import messages as m
from anypu.scheduler import AgentConnected, AgentSaid, JobSubmitted, SchedulerConfig, SchedulerState
from anypu.scheduler._compute_model import MIN_MODELS, WORK, fit_throughput, nnls, work_of
from anypu.scheduler._learned import Learned, Lesson
from tests.builders import join, submit_request

# A device model that takes 0.2 ms a call, 5 µs an operator, 1 ns a matmul FLOP, 4 ns a
# conv FLOP, 2 ns an attention FLOP and 0.1 ns a byte moved.
TRUE = np.array([2e-4, 5e-6, 1e-9, 4e-9, 2e-9, 1e-10])
MODELS = {
    "mlp-small": (10, 1e6, 0, 0, 1e6),
    "mlp-wide": (10, 5e7, 0, 0, 2e7),
    "cnn": (20, 1e5, 2e7, 0, 5e6),
    "attention": (90, 4e6, 0, 1e6, 3e6),
    "deep": (300, 2e6, 0, 0, 4e6),
    "conv-deep": (60, 1e6, 8e7, 0, 2e7),
    "attention-long": (120, 1e7, 0, 8e6, 6e6),
    "tiny": (3, 1e3, 0, 0, 1e4),
}


def _seconds(work: tuple[float, ...]) -> float:
    return float(TRUE[0] + np.dot(TRUE[1:], work))


def test_nnls_is_least_squares_where_that_is_non_negative_and_clips_where_not() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nnls(a, np.array([1.0, 2.0, 3.0])) == pytest.approx([1.0, 2.0])
    x = nnls(np.array([[1.0, 1.0], [1.0, 2.0]]), np.array([1.0, 0.0]))  # LS: (2, -1)
    assert (x >= 0).all() and x == pytest.approx([0.5, 0.0], abs=1e-9)


def test_a_fit_on_some_models_predicts_one_it_never_saw() -> None:
    train = {k: (w, _seconds(w)) for k, w in MODELS.items() if k != "attention"}
    fit = fit_throughput(train)
    assert fit is not None and fit.models == 7 and fit.error < 1e-6
    unseen = MODELS["attention"]
    assert fit.seconds(unseen) == pytest.approx(_seconds(unseen), rel=0.01)


def test_too_few_models_or_unusable_runs_fit_nothing() -> None:
    few = {k: (w, _seconds(w)) for k, w in list(MODELS.items())[: MIN_MODELS - 1]}
    assert fit_throughput(few) is None
    broken = {**few, "x": ((1, 2), 0.1), "y": (MODELS["cnn"], -1.0), "z": (MODELS["cnn"], 0.0)}
    assert fit_throughput(broken) is None


def _taught(learned: Learned) -> list[Lesson]:
    lessons = []
    for name, work in MODELS.items():
        if name == "attention":
            continue
        lessons.append(learned.ran(name, "Xeon", _seconds(work)))
        lesson = learned.worked(name, work)
        assert lesson is not None
        lessons.append(lesson)
    return lessons


def test_learned_predicts_per_device_model_and_survives_a_restart() -> None:
    learned = Learned()
    lessons = _taught(learned)
    unseen = MODELS["attention"]
    before = learned.predicted(unseen)
    assert before["Xeon"] == pytest.approx(_seconds(unseen), rel=0.05)
    assert learned.worked("mlp-small", MODELS["mlp-small"]) is None  # already known
    assert learned.worked("new", (0,) * len(WORK)) is None  # a client that says nothing
    assert learned.predicted((0,) * len(WORK)) == {}
    again = Learned()
    again.restore(lessons)
    assert again.predicted(unseen) == pytest.approx(before)


def test_a_new_model_is_placed_on_the_learnt_time_and_then_on_its_own() -> None:
    from anypu.devices import Device

    xeon = Device("cpu0", "cpu", "intel", "Xeon", 8 << 30, 1.0, "cpu")
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0))
    state.handle(AgentConnected(join("n1", devices=(xeon,)), now=0.0))
    _taught(state.learned)
    fields = dict(zip(WORK, MODELS["attention"], strict=True))
    request = submit_request(artifact_digest="a" * 64, **fields)
    assert work_of(request) == MODELS["attention"]
    state.handle(JobSubmitted("j1", request, now=1.0))
    placement = state.jobs["j1"].placement
    assert placement is not None and placement.compute_from == "learned"
    assert placement.terms["compute"] == pytest.approx(_seconds(MODELS["attention"]), rel=0.05)
    done = m.JobResult("j1", 1, m.Outcome(run_seconds=0.004), node_id="n1")
    state.handle(AgentSaid("n1", 1, done, now=2.0))
    state.handle(JobSubmitted("j2", request, now=3.0))
    again = state.jobs["j2"].placement
    assert again is not None and again.compute_from == "measured"
    assert again.terms["compute"] == pytest.approx(0.004)


def test_a_cold_first_run_is_replaced_by_the_first_warm_one_not_averaged() -> None:
    learned = Learned()
    learned.ran("d", "Xeon", 0.050, cold=True)  # loaded for it: slower than the rest
    assert learned.timings_of("d") == {"Xeon": 0.050}
    learned.ran("d", "Xeon", 0.010)
    assert learned.timings_of("d") == {"Xeon": 0.010}
    learned.ran("d", "Xeon", 0.020)
    assert learned.timings_of("d")["Xeon"] == pytest.approx(0.013)
    learned.ran("d", "Xeon", 0.090, cold=True)  # reloaded later: says nothing new
    assert learned.timings_of("d")["Xeon"] == pytest.approx(0.013)
