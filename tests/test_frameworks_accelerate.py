"""Accelerate with gradient accumulation, an optimlab optimizer and a ScheduledLR.

``accelerator.prepare(model, optimizer, dataloader, scheduler)`` wraps the
scheduler in an ``AcceleratedScheduler``, which adds to ``scheduler._step_count``
on the micro-steps that do not step the optimizer when the gradient state says
``adjust_scheduler`` (an AttributeError before the adapters had torch's counters).
A run resumed with ``save_state``/``load_state`` ends bitwise equal to the straight
run, which matches torch.optim's AdamW with torch's scheduler, counters included.

Accelerate documents ``adjust_scheduler=True`` as the default, but (1.15)
``GradientAccumulationPlugin.to_kwargs()`` leaves out fields at their default and
``GradientState.adjust_scheduler`` then reads False: the adjustment runs only when
the gradient state holds it explicitly, which the "adjusted" runs here set.
"""

from __future__ import annotations

import pytest
import torch

from frameworks_util import (
    RECIPES,
    STEPS,
    assert_bitwise_equal,
    assert_close,
    assert_moved,
    parameters,
    quiet,  # noqa: F401 (a fixture)
)

accelerate = pytest.importorskip("accelerate", reason="the test extra brings accelerate")
from accelerate.state import AcceleratorState, GradientState  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiet", "fresh_accelerate_state")

ACCUMULATE = 2  # micro-batches per optimizer step
MICRO_BATCH = 4
EPOCHS = 2
MICRO_STEPS_PER_EPOCH = ACCUMULATE * STEPS // EPOCHS


@pytest.fixture
def fresh_accelerate_state():
    # Accelerate keeps its state in process-wide singletons; each run starts its own.
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(MICRO_BATCH * MICRO_STEPS_PER_EPOCH, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=MICRO_BATCH)


def _train(recipe: str, adjust: bool = True, save_to=None, load_from=None):
    """EPOCHS epochs, or the last one after ``load_state(load_from)``; ``save_to`` after the first.

    ``adjust``: the scheduler's counter counts the micro-steps (see the module docstring).
    Returns the (unwrapped) scheduler and the model's parameters.
    """
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=ACCUMULATE)
    if adjust:
        accelerator.gradient_state.plugin_kwargs["adjust_scheduler"] = True
    make_optimizer, make_scheduler = RECIPES[recipe]
    model = _model()
    optimizer = make_optimizer(model.parameters())
    scheduler = make_scheduler(optimizer)
    model, optimizer, data, scheduler = accelerator.prepare(model, optimizer, _data(), scheduler)
    first = 0
    if load_from is not None:
        accelerator.load_state(load_from)
        first = 1
    for epoch in range(first, EPOCHS):
        for x, y in data:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        if epoch == 0 and save_to is not None:
            accelerator.save_state(save_to)
    return scheduler.scheduler, parameters(accelerator.unwrap_model(model))


@pytest.mark.parametrize("adjust", [True, False], ids=["adjusted", "as configured"])
def test_gradient_accumulation_resumes_bitwise_and_matches_torch(tmp_path, adjust):
    start = parameters(_model())
    scheduler, straight = _train("optimlab", adjust, save_to=tmp_path / "state")
    assert_moved(start, straight)
    torch_scheduler, theirs = _train("torch", adjust)
    # one lr step per optimizer step; the micro-steps counted as on torch's scheduler
    assert scheduler.last_epoch == torch_scheduler.last_epoch == STEPS
    counted = 1 + (ACCUMULATE * STEPS if adjust else STEPS)
    assert scheduler._step_count == torch_scheduler._step_count == counted
    assert scheduler.get_last_lr() == pytest.approx(torch_scheduler.get_last_lr(), rel=1e-12)
    assert_close(straight, theirs)

    resumed_scheduler, resumed = _train("optimlab", adjust, load_from=tmp_path / "state")
    assert_bitwise_equal(resumed, straight)
    assert resumed_scheduler.state_dict() == scheduler.state_dict()


def test_gradient_accumulation_reference_path_is_bitwise_torch(tmp_path):
    _, ours = _train("optimlab fused=False")
    _, theirs = _train("torch + ScheduledLR")
    assert_bitwise_equal(ours, theirs)
