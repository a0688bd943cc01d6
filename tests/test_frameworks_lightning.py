"""PyTorch Lightning with an optimlab optimizer and a ScheduledLR stepped every batch.

``configure_optimizers`` returns the optimizer and ``{"scheduler": ScheduledLR(...),
"interval": "step"}``; a fit resumed from a ``.ckpt`` ends bitwise equal to the
straight fit, which matches torch.optim's AdamW with torch's scheduler.
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

pl = pytest.importorskip("pytorch_lightning", reason="the test extra brings pytorch-lightning")

pytestmark = pytest.mark.usefixtures("quiet", "deterministic_restored")

BATCH = 8
EPOCHS = 2
STEPS_PER_EPOCH = STEPS // EPOCHS


@pytest.fixture
def deterministic_restored():
    # Trainer(deterministic=True) switches torch's global flag on and leaves it on
    was = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(was)


class Regression(pl.LightningModule):
    def __init__(self, recipe: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.recipe = recipe

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        make_optimizer, make_scheduler = RECIPES[self.recipe]
        optimizer = make_optimizer(self.parameters())
        scheduler = {"scheduler": make_scheduler(optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * STEPS_PER_EPOCH, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


def _fit(recipe: str, out, ckpt_path=None):
    """Fit EPOCHS epochs, a checkpoint at the end of each; the trainer and the parameters."""
    model = Regression(recipe)
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=out, filename="{epoch}", save_top_k=-1, every_n_epochs=1
    )
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        deterministic=True,
        default_root_dir=out,
    )
    trainer.fit(model, _data(), ckpt_path=ckpt_path)
    return trainer, parameters(model)


def test_fit_resumes_bitwise_and_matches_torch(tmp_path):
    start = parameters(Regression("optimlab"))
    trainer, straight = _fit("optimlab", tmp_path / "straight")
    assert_moved(start, straight)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == STEPS and scheduler._step_count == STEPS + 1

    checkpoint = tmp_path / "straight" / "epoch=0.ckpt"
    saved = torch.load(checkpoint, weights_only=False)["lr_schedulers"]
    assert saved == [{**scheduler.state_dict(), "last_epoch": STEPS_PER_EPOCH,
                      "_step_count": STEPS_PER_EPOCH + 1}]  # fmt: skip
    resumed_trainer, resumed = _fit("optimlab", tmp_path / "resumed", ckpt_path=checkpoint)
    assert_bitwise_equal(resumed, straight)
    assert resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict() == scheduler.state_dict()

    _, theirs = _fit("torch", tmp_path / "torch")
    assert_close(straight, theirs)


def test_fit_reference_path_is_bitwise_torch(tmp_path):
    _, ours = _fit("optimlab fused=False", tmp_path / "ours")
    _, theirs = _fit("torch + ScheduledLR", tmp_path / "theirs")
    assert_bitwise_equal(ours, theirs)
