"""The shared training loop: batching covers every example once, distillation loss, constraints hooks."""

from __future__ import annotations

import random

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.loop import BaseHook, LoopConfig, TrainSet, distillation_loss, fit, make_batches
from tests.compressor.conftest import make_classifier


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=300), size=st.integers(1, 40),
       by_length=st.booleans(), seed=st.integers(0, 100))
def test_every_example_lands_in_exactly_one_batch(lengths: list[int], size: int, by_length: bool, seed: int) -> None:
    batches = make_batches(lengths, size, random.Random(seed), by_length)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= size for b in batches)


def test_distillation_loss_mixes_hard_and_soft_targets() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(student, labels)
    torch.testing.assert_close(distillation_loss(student, labels, None, 0.7, 2.0), ce)
    torch.testing.assert_close(distillation_loss(student, labels, student.clone(), 1.0, 2.0), torch.tensor(0.0))
    teacher = torch.tensor([[0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    mixed = distillation_loss(student, labels, teacher, 0.5, 2.0)
    assert float(mixed) > 0.5 * float(ce)


class _ZeroFirstColumn(BaseHook):
    def __init__(self) -> None:
        self.steps = 0

    def after_step(self, model) -> None:
        self.steps += 1
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight[:, 0] = 0


def test_fit_learns_a_separable_task_and_runs_hooks_after_every_step() -> None:
    model = make_classifier(layers=1, hidden=32, heads=4, kv_heads=2, ffn=64, vocab=40)
    rng = random.Random(0)
    ids, labels = [], []
    for _ in range(96):  # the class is the token right after BOS
        y = rng.randrange(3)
        ids.append([1, 10 + y, *[rng.randrange(20, 40) for _ in range(rng.randrange(2, 8))], 2])
        labels.append(y)
    data = TrainSet(ids, labels, pad_id=0, unk_id=3, special_ids=frozenset({0, 1, 2}),
                    teacher_logits=np.eye(3, dtype=np.float32)[labels] * 4)
    hook = _ZeroFirstColumn()
    result = fit(model, data, LoopConfig(epochs=6, batch_size=16, learning_rate=3e-3, distill_alpha=0.5,
                                         length_buckets=True), hooks=[hook], progress=False)
    assert hook.steps == result.steps == 36
    assert float(model.model.layers[0].mlp.up_proj.weight[:, 0].detach().abs().sum()) == 0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    model.eval()
    with torch.inference_mode():
        pred = model(input_ids=torch.tensor([[1, 10, 25, 2], [1, 11, 25, 2], [1, 12, 25, 2]])).logits.argmax(-1)
    assert pred.tolist() == [0, 1, 2]


def test_layer_dropout_one_skips_every_layer_in_training_only() -> None:
    model = make_classifier(layers=2, hidden=32, heads=4, kv_heads=2, ffn=64, vocab=40)
    before = [p.detach().clone() for p in model.model.layers.parameters()]
    data = TrainSet([[1, 5, 6, 2], [1, 7, 2]] * 8, [0, 1] * 8, pad_id=0)
    fit(model, data, LoopConfig(epochs=1, batch_size=4, layer_dropout=1.0), progress=False)
    after = list(model.model.layers.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after, before))  # skipped layers get no gradient
    assert all(not h for layer in model.model.layers for h in (layer._forward_hooks,))  # hooks removed
