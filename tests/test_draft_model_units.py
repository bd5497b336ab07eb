"""Draft models without a model: the option's default, the drafter's bounds, the KV prefix rule,
the memory estimate, the Modelfile's DRAFT and draft_num_predict, the option's validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pydantic
import pytest

from corral.api.schemas import Options
from corral.models.gguf_info import GGUFInfo
from corral.models.modelfile import ModelfileError, parse_modelfile
from corral.runner.draft_model import DraftModel, ModelDrafter, _common, draft_num_predict
from corral.runner.protocol import GenerationOptions
from corral.scheduler.memory import estimate

INFO = GGUFInfo(path=Path("/models/m"), architecture="llama", name="m", file_size=0, tensor_bytes=100 << 20,
                parameter_count=1, context_length=8192, block_count=30, embedding_length=576, head_count=9,
                head_count_kv=3, key_length=64, value_length=64, sliding_window=0, vocab_size=49152,
                file_type="Q4_1", chat_template=None, bos_token="", eos_token="")


def test_draft_num_predict_is_ollamas_default_4_and_0_is_off() -> None:
    assert draft_num_predict(GenerationOptions()) == 4
    assert draft_num_predict(GenerationOptions(draft_num_predict=0)) == 0
    assert draft_num_predict(GenerationOptions(draft_num_predict=9)) == 9


def test_a_request_that_asks_for_no_drafting_gets_no_drafter() -> None:
    model = object.__new__(DraftModel)  # drafter() reads nothing of the loaded model
    assert model.drafter(0, [1], GenerationOptions(draft_num_predict=0)) is None
    assert model.drafter(0, [1], GenerationOptions(speculative=False)) is None
    d = model.drafter(2, [1, 2], GenerationOptions())
    assert isinstance(d, ModelDrafter) and (d.seq, d.k, d.tokens) == (2, 4, [1, 2])


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int], int]] = []

    def draft(self, seq: int, tokens: list[int], k: int) -> list[int]:
        self.calls.append((seq, list(tokens), k))
        return list(range(k))


def test_the_drafter_asks_for_at_most_its_k_and_the_engines_limit() -> None:
    rec = _Recorder()
    d = ModelDrafter(rec, 1, [7, 8], 4)  # type: ignore[arg-type]  # duck-typed DraftModel
    d.append(9)
    assert d.draft() == [0, 1, 2, 3] and d.draft(2) == [0, 1] and d.draft(0) == []
    assert rec.calls[0] == (1, [7, 8, 9], 4) and [c[2] for c in rec.calls] == [4, 2, 0]
    d.feedback(0)  # the KV is cut back lazily, at the next draft
    assert d.tokens == [7, 8, 9]


def test_common_prefix_decides_what_the_draft_kv_keeps() -> None:
    # The draft's KV holds the context and a draft [5, 6]; the model accepted 5 and then said 4.
    assert _common([1, 2, 3, 5, 6], [1, 2, 3, 5, 4], 4) == 4
    assert _common([1, 2, 3], [1, 2, 3, 4], 3) == 3  # all of it, and the last token is decoded again
    assert _common([1, 2, 3], [1, 2, 3], 2) == 2
    assert _common([], [1, 2], 1) == 0
    assert _common([9, 2], [1, 2], 1) == 0


def test_the_estimate_adds_the_draft_weights_and_its_kv_for_every_slot() -> None:
    draft = replace(INFO, tensor_bytes=10 << 20, block_count=2, head_count_kv=1)
    plain, with_draft = estimate(INFO, 2048, 4), estimate(INFO, 2048, 4, draft=draft)
    kv = draft.kv_bytes_per_token() * 2048 * 4
    assert plain.draft == 0 and with_draft.draft >= draft.tensor_bytes + kv
    assert with_draft.total - plain.total == with_draft.draft
    assert estimate(INFO, 2048, 1, draft=draft).draft < with_draft.draft  # per slot


def test_modelfile_draft_and_its_parameter() -> None:
    mf = parse_modelfile("FROM smollm2:135m\nDRAFT ./draft.gguf\nPARAMETER draft_num_predict 6\n")
    assert (mf.source, mf.draft, mf.parameters) == ("smollm2:135m", "./draft.gguf", {"draft_num_predict": 6})
    assert parse_modelfile("FROM m\n").draft is None
    with pytest.raises(ModelfileError):
        parse_modelfile("FROM m\nPARAMETER draft_num_predict many\n")


def test_draft_num_predict_option_reaches_the_runner_and_is_checked() -> None:
    assert Options(draft_num_predict=0).generation().draft_num_predict == 0
    assert Options().generation().draft_num_predict is None
    with pytest.raises(pydantic.ValidationError):
        Options(draft_num_predict=-1)
    with pytest.raises(pydantic.ValidationError):
        Options.model_validate({"draft_num_predict": "4"})
