"""Hugging Face Trainer with an optimlab optimizer and a ScheduledLR, as HF's docs pass them.

``Trainer(optimizers=(optimizer, scheduler))`` trains a tiny GPT-2 built from a
config (no download) on synthetic tokens; a run resumed with
``resume_from_checkpoint`` ends bitwise equal to the straight run, and the
straight run matches torch.optim's AdamW with torch's scheduler.
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

transformers = pytest.importorskip("transformers", reason="the test extra brings transformers")

pytestmark = pytest.mark.usefixtures("quiet", "no_progress_bars")

BATCH = 4
SAVE_AT = STEPS // 2


class Tokens(torch.utils.data.Dataset):
    """Arithmetic sequences modulo the vocabulary from random starts: something to learn."""

    def __init__(self, n: int = BATCH * STEPS, length: int = 16, vocab: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        start = torch.randint(0, vocab, (n, 1), generator=g)
        self.ids = (start + torch.arange(length) * 3) % vocab

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.fixture
def no_progress_bars():
    # save_pretrained draws one for every checkpoint
    was = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    yield
    if was:
        transformers.utils.logging.enable_progress_bar()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _train(recipe: str, out, resume_from=None):
    """Train STEPS steps (checkpoints every SAVE_AT); the trainer and the model's parameters."""
    make_optimizer, make_scheduler = RECIPES[recipe]
    model = _model()
    optimizer = make_optimizer(model.parameters())
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        save_strategy="steps",
        save_steps=SAVE_AT,
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Tokens(),
        optimizers=(optimizer, make_scheduler(optimizer)),
    )
    trainer.remove_callback(transformers.PrinterCallback)  # it prints the final metrics
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, parameters(model)


def _without_key_bias(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters, less the key third of each attention's bias.

    Softmax ignores a shift that is the same for every key, so the key bias gets a
    gradient of exactly zero, computed as rounding noise, and Adam scales noise up
    to steps of about ``lr``: two correct implementations that round differently
    move it differently (measured: up to 2e-5, against 1.2e-7 elsewhere).
    """
    n = _model().config.n_embd
    out = dict(params)
    for name, value in params.items():
        if name.endswith("attn.c_attn.bias"):
            out[name] = torch.cat([value[:n], value[2 * n :]])
    return out


@pytest.mark.slow  # ~3-4 s: three short runs of a 2-layer GPT-2
def test_trainer_resumes_bitwise_and_matches_torch(tmp_path):
    start = parameters(_model())
    trainer, straight = _train("optimlab", tmp_path / "straight")
    assert_moved(start, straight)
    scheduler = trainer.lr_scheduler
    assert scheduler.last_epoch == STEPS and scheduler._step_count == STEPS + 1

    checkpoint = tmp_path / "straight" / f"checkpoint-{SAVE_AT}"
    saved = torch.load(checkpoint / "scheduler.pt", weights_only=True)
    assert saved == {**scheduler.state_dict(), "last_epoch": SAVE_AT, "_step_count": SAVE_AT + 1}
    resumed_trainer, resumed = _train("optimlab", tmp_path / "resumed", resume_from=checkpoint)
    assert_bitwise_equal(resumed, straight)
    assert resumed_trainer.lr_scheduler.state_dict() == scheduler.state_dict()

    _, theirs = _train("torch", tmp_path / "torch")
    assert_close(_without_key_bias(straight), _without_key_bias(theirs))


def test_trainer_reference_path_is_bitwise_torch(tmp_path):
    _, ours = _train("optimlab fused=False", tmp_path / "ours")
    _, theirs = _train("torch + ScheduledLR", tmp_path / "theirs")
    assert_bitwise_equal(ours, theirs)
