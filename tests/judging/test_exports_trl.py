"""TRL trains on the exports as they are: one DPO step and one reward-model step on pairs, one KTO
step on judgments, with a tiny randomly initialised Llama and the embedded model's tokenizer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from django.utils import timezone

from judging.exports import ExportRequest, run_export

TOKENIZER = Path(__file__).resolve().parents[2] / "data" / "models" / "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def judged(make_debate, bob, charlie):  # type: ignore[no-untyped-def]
    """Four finished debates, each with two speeches a side, best-of-N candidates on every turn and
    two human verdicts that disagree (bob and charlie)."""
    from arena.models import Candidate, Debate, Turn
    from judging.models import Assignment
    from judging.services import submit_human_verdict

    now = timezone.now()
    for i in range(4):
        debate = make_debate(judges=[bob, charlie], seed=i)
        for index, (rnd, side) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
            turn = Turn.objects.create(
                debate=debate, index=index, round=rnd, side=side, text=f"Debate {i}: side {side} says round {rnd}.",
                prompt=[{"role": "system", "content": "You are a debater."}, {"role": "user", "content": f"Speak ({i})."}],
                prompt_hash="x", started_at=now, finished_at=now,
            )  # fmt: skip
            for c, score in enumerate((0.6, 0.3)):
                Candidate.objects.create(turn=turn, index=c, text=f"Candidate {c} for turn {turn.pk}.", score=score)
        Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED)
        # Bob gives answer 1 80%, charlie answer 2 70%: one of them is right, whatever the gold answer
        # and whichever order each was shown.
        for judge, p_answer_1 in ((bob, 0.8), (charlie, 0.3)):
            assignment = Assignment.objects.get(debate=debate, judge=judge)
            p_first = p_answer_1 if assignment.shown_first == 0 else 1 - p_answer_1
            submit_human_verdict(assignment, p_first, 1 - p_first, "The quotes of this side were verified.")


def _tiny_model():  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return tokenizer, config, LlamaForCausalLM(config)


def _load(path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def _args(tmp_path: Path, name: str) -> dict[str, object]:
    return {
        "output_dir": str(tmp_path / name), "report_to": "none", "max_steps": 1, "per_device_train_batch_size": 2,
        "use_cpu": True, "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "max_length": 256,
    }  # fmt: skip


def _trained(trainer) -> float:  # type: ignore[no-untyped-def]
    import math

    import torch

    before = [p.detach().clone() for p in trainer.model.parameters()]
    output = trainer.train()
    assert output.global_step == 1
    assert math.isfinite(output.training_loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True))
    return output.training_loss


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["arguments", "turns"])
def test_dpo_and_reward_trainers_step_on_a_pair_export(judged, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    from transformers import LlamaForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    pairs = run_export(
        ExportRequest(kind=kind, format="conversational", per_verdict=kind == "arguments"), tmp_path / "dpo"
    )
    reward = run_export(ExportRequest(kind=kind, format="reward", file_format="parquet"), tmp_path / "rm")
    tokenizer, config, model = _tiny_model()

    dpo = DPOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=DPOConfig(**_args(tmp_path, "dpo-run")),
        train_dataset=_load(pairs.path, tmp_path), processing_class=tokenizer,
    )  # fmt: skip
    _trained(dpo)

    import datasets

    rm_config = copy.deepcopy(config)
    rm_config.num_labels = 1
    rm_data = datasets.load_dataset(
        "parquet", data_files=str(reward.path), split="train", cache_dir=str(tmp_path / "c")
    )
    assert "margin" in rm_data.column_names
    rm = RewardTrainer(
        model=LlamaForSequenceClassification(rm_config), args=RewardConfig(**_args(tmp_path, "rm-run")),
        train_dataset=rm_data, processing_class=tokenizer,
    )  # fmt: skip
    _trained(rm)


@pytest.mark.django_db
def test_kto_trainer_steps_on_a_judgments_export(judged, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from trl import KTOConfig, KTOTrainer

    result = run_export(ExportRequest(kind="judgments", format="unpaired"), tmp_path / "kto")
    data = _load(result.path, tmp_path)
    assert sorted(set(data["label"])) == [False, True]
    tokenizer, _, model = _tiny_model()

    kto = KTOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=KTOConfig(**_args(tmp_path, "kto-run")),
        train_dataset=data, processing_class=tokenizer,
    )  # fmt: skip
    _trained(kto)
