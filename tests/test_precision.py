"""bf16 autocast in training: on a GPU, and on a CPU with AMX where the step packs its micro-batches
(`bf16`, `packing`, both on by default); fp32 elsewhere. CI has no GPU and may lack AMX, so the
autocast path is also run forced on the CPU: it must train as fp32 does."""

from __future__ import annotations

import pytest
import torch

from bioner.config import TrainConfig
from bioner.data.features import FeatureBuilder
from bioner.data.iob import read_split
from bioner.data.job import load_job_data
from bioner.data.specs import load_spec
from bioner.model import build_model
from bioner.train.step import Step, native_bf16
from helpers import write_corpus, write_spec


@pytest.fixture
def one_type(tmp_path, minilm_tokenizer, tiny_bert):
    rows = "Flu\tB-A\nand\tO\nfever\tB-A\nhit\tO\nhard\tO\n.\tO\n\nsalt\tO\ncauses\tO\nchronic\tB-A\nfever\tI-A\n\n" * 4
    write_corpus(tmp_path / "c1", {"train": rows, "devel": rows, "test": rows})
    spec = load_spec(write_spec(tmp_path / "one.yaml", "c1", types=("A",), name="one"))
    cfg = TrainConfig(dataset=str(spec.path), encoder=tiny_bert, query_source="annotation", seed=5, dropout=0.0)
    train = read_split(spec, "train")
    fb = FeatureBuilder(minilm_tokenizer, spec.labels, 64, load_job_data(cfg).queries, spec.types)
    enc = fb.encode(train.tokens, train.tags, mrc=True, annotated=train.annotated)
    return cfg, enc, spec


def test_a_cpu_trains_in_bf16_only_with_amx_and_packing(one_type, monkeypatch):
    cfg, enc, _ = one_type
    cpu = torch.device("cpu")
    for amx in (True, False):  # this machine's CPU has one answer; the other is what a CI runner may have
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert native_bf16(cpu) is amx
        for bf16, packing, micro in [
            (True, None, True),
            (True, False, True),
            (False, None, True),
            (True, None, False),
            (False, True, True),
        ]:
            step = Step(
                None,
                [],
                None,
                None,
                cfg.model_copy(update={"bf16": bf16, "packing": packing, "micro_batching": micro}),
                cpu,
                enc,
                0,
            )
            expect = amx and bf16 and packing is not False and micro
            assert step.bf16 is expect and step.precision == ("bf16 autocast" if expect else "fp32")
            assert step.packing is (expect or (packing is True and micro))  # packing follows bf16 unless set


def test_bf16_training_follows_fp32_training(one_type, tiny_bert):
    """Autocast runs the products in bf16 and keeps weights, optimizer state and losses in fp32.
    One step's loss is fp32's to bf16 rounding, and 40 steps end where fp32's end. (A single
    gradient is not the check: at random init most of it is sums of near-cancelling terms, where
    bf16's 8-bit mantissa moves the small rest by 10-20 %.)"""
    cfg, enc, spec = one_type
    curves = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_bert, len(spec.labels), dropout=0.0).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=3e-3)
        step = Step(
            model, params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), cfg, torch.device("cpu"), enc, 0
        )
        step.bf16 = bf16  # forced: the GPU's autocast path, run on the CPU
        curves[bf16] = [step(range(len(enc))) for _ in range(40)]  # (loss, NER loss, MRC loss) per step
        assert all(p.dtype == torch.float32 for p in params)  # the weights stay fp32
    assert curves[True][0] == pytest.approx(curves[False][0], rel=2e-2)
    assert curves[True][0] != curves[False][0]  # bf16 did run: not bit-identical
    fp32, bf16 = [c[0] for c in curves[False]], [c[0] for c in curves[True]]
    assert fp32[-1] < 0.2 * fp32[0] and bf16[-1] < 0.2 * bf16[0]  # both learn the toy corpus
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.25, abs=0.02), (fp32[-5:], bf16[-5:])


def test_a_narrow_encoder_trains_fp32_even_on_an_amx_cpu(one_type, tiny_bert, monkeypatch):
    """32-wide products are too small for AMX to repay autocast's casts: the test suite's tiny BERTs
    train fp32 (and unpacked); a 256-wide encoder gets bf16 and packing."""
    from transformers import BertConfig, BertModel

    from bioner.model.network import BioNERModel

    cfg, enc, spec = one_type
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    narrow = Step(build_model(tiny_bert, len(spec.labels)), [], None, None, cfg, torch.device("cpu"), enc, 0)
    assert (narrow.bf16, narrow.packing) == (False, False)
    wide_encoder = BertModel(
        BertConfig(vocab_size=128, hidden_size=256, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256)
    )
    wide = Step(BioNERModel(wide_encoder, len(spec.labels)), [], None, None, cfg, torch.device("cpu"), enc, 0)
    assert (wide.bf16, wide.packing) == (True, True)


def test_an_encoder_without_sdpa_attention_trains_unpacked_and_refuses_packing_true(one_type, monkeypatch):
    """Packed rows need a 4D mask (SDPA): the default falls back to unpacked rows, and so to fp32 on
    an AMX CPU; `packing: true` is one line naming the attention."""
    from transformers import BertConfig, BertModel

    from bioner.errors import BionerError
    from bioner.model.network import BioNERModel

    cfg, enc, spec = one_type
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    config = BertConfig(
        vocab_size=128, hidden_size=256, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256
    )
    config._attn_implementation = "eager"
    eager = BertModel(config)
    model = BioNERModel(eager, len(spec.labels))
    step = Step(model, [], None, None, cfg, torch.device("cpu"), enc, 0)
    assert (step.bf16, step.packing) == (False, False)
    with pytest.raises(BionerError, match=r"^packing: the encoder's attention is 'eager'; packed rows need 'sdpa'"):
        Step(model, [], None, None, cfg.model_copy(update={"packing": True}), torch.device("cpu"), enc, 0)


def test_a_gpu_micro_batch_grows_with_free_memory_within_its_bounds():
    from bioner.train.step import GPU_MICRO_TOKENS, GPU_MICRO_TOKENS_MAX, gpu_micro_tokens

    base = gpu_micro_tokens(140 * 10**9, 768, 12, bf16=True)  # an idle H200, BERT-base
    assert base == int(0.5 * 140 * 10**9 / (64 * 768 * 12)) == 118_679
    assert gpu_micro_tokens(140 * 10**9, 768, 12, bf16=True, tasks=2) == base // 2  # NER and MRC rows in one forward
    assert gpu_micro_tokens(140 * 10**9, 768, 12, bf16=False) == base // 2  # fp32 activations: twice the bytes
    assert (
        gpu_micro_tokens(15 * 10**9, 768, 12, bf16=True) == GPU_MICRO_TOKENS
    )  # a small GPU: never below the old bound
    assert gpu_micro_tokens(10**13, 768, 12, bf16=True) == GPU_MICRO_TOKENS_MAX
