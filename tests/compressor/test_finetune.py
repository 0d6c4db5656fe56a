"""Fine-tuning a pretrained LLaMA: successive layer dropping, frozen embeddings, early stop, vocabulary trim.

The "pretrained" model is a tiny random causal LLaMA with a byte-level BPE tokenizer trained here, saved as a
Hugging Face directory exactly as `compress import` writes one; mechanics, not accuracy, are under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compressor.data import DataError
from compressor.errors import ModelError
from compressor.finetune import FinetuneConfig, finetune, skip_losses, _Batches

WORDS = ("negative", "neutral", "positive")


def _tokenizer(texts: list[str]) -> Any:
    """Byte-level BPE with no special-token template (like SmolLM2/Llama 3), label words as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts + [" negative neutral positive"] * 2000, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>", model_max_length=8192)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer random LlamaForCausalLM with tied embeddings, saved with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from compressor.data import load_corpus
    from finsignal.demo import sample_corpus

    train_path, _ = sample_corpus()
    tokenizer = _tokenizer(load_corpus(train_path).texts)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, architectures=["LlamaForCausalLM"])
    out = tmp_path_factory.mktemp("base")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus() -> tuple[Path, Path]:
    from finsignal.demo import sample_corpus

    return sample_corpus()


def _config(**changes: Any) -> FinetuneConfig:
    base = dict(target_layers=3, drop_every=2, warmup_steps=2, max_steps=14, batch_size=16, eval_every=2,
                patience=50, probe_examples=24, label_words=WORDS, bf16_autocast="off", learning_rate=1e-3,
                teacher_layers=None)
    return FinetuneConfig(**{**base, **changes})


def test_layers_dropped_on_schedule_embeddings_frozen(base_dir: Path, corpus: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from compressor.model_io import check_checkpoint, load_model, load_tokenizer

    train_path, eval_path = corpus
    report = finetune(base_dir, train_path, tmp_path / "out", eval_path, _config(), progress=False)

    assert [d["step"] for d in report["drops"]] == [2, 4, 6]  # warm-up, then one drop every 2 steps
    assert [d["layers_left"] for d in report["drops"]] == [5, 4, 3]
    assert len(report["kept_layers"]) == 3 and report["kept_layers"][-1] == 5  # the last layer is protected
    assert all(d["scores"][-1] is None for d in report["drops"])  # ... and never scored
    assert report["history"] and all(h["layers"] == 3 for h in report["history"])  # validated at the target

    model = LlamaForSequenceClassification.from_pretrained(tmp_path / "out")
    assert model.config.num_hidden_layers == 3
    base = load_model(check_checkpoint(base_dir, list(WORDS)), load_tokenizer(check_checkpoint(base_dir, list(WORDS))))
    kept = report["kept_layers"]
    # frozen embeddings: every row that survived the vocabulary trim is the base model's row of that token
    new_vocab = AutoTokenizer.from_pretrained(tmp_path / "out").get_vocab()
    old_vocab = AutoTokenizer.from_pretrained(base_dir).get_vocab()
    assert set(new_vocab) < set(old_vocab)
    new_rows = torch.tensor([new_vocab[t] for t in new_vocab])
    old_rows = torch.tensor([old_vocab[t] for t in new_vocab])
    assert torch.equal(model.model.embed_tokens.weight[new_rows], base.model.embed_tokens.weight[old_rows])
    # trained layers moved away from the base layers they came from
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, base.model.layers[kept[0]].mlp.up_proj.weight)
    meta = json.loads((tmp_path / "out" / "finsignal.json").read_text())
    assert meta["lineage"]["recipe"]["stage"] == "finetune" and meta["max_length"] == 512
    assert report["vocabulary"]["kept_vocab"] < report["vocabulary"]["original_vocab"]


def test_teacher_trained_then_distilled_into_target(base_dir: Path, corpus: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    train_path, eval_path = corpus
    config = _config(teacher_layers=5, teacher_epochs=0.1, target_layers=3, epochs=1.0,
                     teacher_criterion="block_influence")
    report = finetune(base_dir, train_path, tmp_path / "out", eval_path, config, progress=False)

    teacher_step = report["teacher"]["step"]
    # one drop down to the teacher, its training, then drops every 2 steps from the teacher's record on
    assert [d["step"] for d in report["drops"]] == [2, teacher_step, teacher_step + 2]
    assert teacher_step > 2 and report["teacher"]["layers"] == 5 and len(report["teacher"]["kept_layers"]) == 5
    assert [d["criterion"] for d in report["drops"]] == ["block_influence", "skip_loss", "skip_loss"]
    assert "val_accuracy" in report["teacher"]
    meta = json.loads((tmp_path / "out" / "finsignal.json").read_text())
    assert meta["lineage"]["teacher"]["layers"] == 5


def test_top_cut_makes_the_teacher_a_prefix_before_the_first_step(base_dir: Path, corpus: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    train_path, _ = corpus
    config = _config(teacher_layers=4, teacher_epochs=0.1, target_layers=3, epochs=0.5, teacher_criterion="top")
    report = finetune(base_dir, train_path, tmp_path / "out", None, config, progress=False)

    assert [(d["step"], d["criterion"]) for d in report["drops"][:2]] == [(0, "top"), (0, "top")]
    assert report["teacher"]["kept_layers"] == [0, 1, 2, 3]  # the first four of six, the last one included in the cut
    assert report["drops"][2]["criterion"] == "skip_loss" and report["drops"][2]["step"] == report["teacher"]["step"]
    assert len(report["kept_layers"]) == 3


def test_schedule_restarts_the_learning_rate_for_the_student() -> None:
    from compressor.finetune import plan_schedule

    config = FinetuneConfig(target_layers=12, teacher_layers=16, warmup_steps=12, drop_every=6, teacher_epochs=1.0,
                            epochs=2.0, teacher_criterion="block_influence")
    plan = plan_schedule(config, start_layers=30, steps_per_epoch=100)
    assert plan.drops[:14] == tuple(12 + 6 * k for k in range(14)) and plan.teacher_step == 90 + 100
    assert plan.drops[14:] == (190, 196, 202, 208) and plan.total == 190 + 200
    assert plan.factor(plan.teacher_step - 1) < 0.01 and plan.factor(plan.teacher_step) > 0  # decayed, restarted
    assert plan.factor(plan.teacher_step + 20) > 0.95  # the student warmed up again
    cut = plan_schedule(FinetuneConfig(teacher_epochs=1.0), start_layers=30, steps_per_epoch=100)
    assert cut.drops[:14] == (0,) * 14 and cut.teacher_step == 100  # "top": cut before training
    with pytest.raises(ValueError, match="steps planned"):
        plan_schedule(FinetuneConfig(epochs=0.01), start_layers=30, steps_per_epoch=100)


def test_distillation_loss_mixes_teacher_and_labels() -> None:
    import torch

    from compressor.finetune import _loss

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    only_teacher = FinetuneConfig(distill_alpha=1.0)
    assert float(_loss(logits, labels, logits.clone(), only_teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(_loss(logits, labels, None, only_teacher)) == pytest.approx(float(ce))
    half = FinetuneConfig(distill_alpha=0.5)
    kd = float(_loss(logits, labels, torch.tensor([[0.0, 3.0, 0.0]]), only_teacher))
    assert kd > 0
    assert float(_loss(logits, labels, torch.tensor([[0.0, 3.0, 0.0]]), half)) == pytest.approx(0.5 * kd + 0.5 * float(ce))


def test_unfrozen_embeddings_train(base_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from transformers import LlamaForSequenceClassification, LlamaForCausalLM

    train_path, _ = corpus
    finetune(base_dir, train_path, tmp_path / "out", None,
             _config(freeze_embeddings=False, trim_vocab=False, target_layers=6), progress=False)
    tuned = LlamaForSequenceClassification.from_pretrained(tmp_path / "out")
    base = LlamaForCausalLM.from_pretrained(base_dir)
    assert not torch.equal(tuned.model.embed_tokens.weight, base.model.embed_tokens.weight)


def test_early_stop_restores_best(base_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_path, _ = corpus
    # a learning rate of zero after the head: validation never improves, so patience 2 stops after 3 checks
    report = finetune(base_dir, train_path, tmp_path / "out", None,
                      _config(max_steps=40, learning_rate=0.0, head_learning_rate=0.0, patience=2), progress=False)
    assert report["stopped_early"]
    assert len(report["history"]) == 3 and report["steps"] < 40
    assert report["best_step"] == report["history"][0]["step"]


def test_skip_loss_matches_bypassing_a_layer() -> None:
    """The replayed-prefix shortcut gives the same loss as running the model with the layer bypassed."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from compressor.finetune import _loss_on

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=3, pad_token_id=0)
    model = LlamaForSequenceClassification(config)
    data = _Batches([[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16], [3, 4]], [0, 1, 2, 1], 0)
    batches = data.ordered(2)
    fast = skip_losses(model, data, batches, [0, 1, 2])
    slow = []
    for i in (0, 1, 2):
        hook = model.model.layers[i].register_forward_hook(
            lambda m, args, kwargs, out: args[0] if args else kwargs["hidden_states"], with_kwargs=True)
        slow.append(_loss_on(model, data, batches)[0])
        hook.remove()
    assert fast == pytest.approx(slow, rel=1e-5)
    assert len(model.model.layers) == 4  # the model is left as it was


def test_bad_inputs_fail_before_training(base_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_path, _ = corpus
    one_label = tmp_path / "one.jsonl"
    one_label.write_text("".join(json.dumps({"text": f"stock {i} rises", "label": "bullish"}) + "\n"
                                 for i in range(20)))
    with pytest.raises(DataError, match="bearish"):
        finetune(base_dir, one_label, tmp_path / "a", None, _config(), progress=False)
    with pytest.raises(ModelError, match="only 6 layers"):
        finetune(base_dir, train_path, tmp_path / "b", None, _config(target_layers=8), progress=False)
    with pytest.raises(ModelError, match="one token"):
        finetune(base_dir, train_path, tmp_path / "c", None, _config(label_words=("bearishly", "meh", "up")),
                 progress=False)
    with pytest.raises(ValueError, match="criterion"):
        finetune(base_dir, train_path, tmp_path / "d", None, _config(criterion="random"), progress=False)
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_weight_average_tracks_and_swaps_back() -> None:
    import torch
    from torch import nn

    from compressor.finetune import _WeightAverage

    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen weights are not averaged
    start = model.weight.detach().clone()
    average = _WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()  # warm-up decay min(0.5, 2/11): the average moves 9/11 of the way
    torch.testing.assert_close(average.average[0], start + 9 / 11)
    live = model.weight.detach().clone()
    average.swap()
    torch.testing.assert_close(model.weight.detach(), start + 9 / 11)
    average.swap()
    torch.testing.assert_close(model.weight.detach(), live)
    assert len(average.params) == 1


def test_weight_average_is_what_validation_judges_and_the_checkpoint_keeps(
        base_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_path, _ = corpus
    report = finetune(base_dir, train_path, tmp_path / "ema", config=_config(ema_decay=0.9), progress=False)
    # target depth reached at the last drop (step 2 + 2 * 2 = 6); averaged from step 7 to 14
    assert report["weight_average"] == {"decay": 0.9, "updates": 8}
    assert report["history"] and report["best_step"] is not None
    with pytest.raises(ValueError, match="ema_decay"):
        _config(ema_decay=1.0).check()
