"""The BERT victims on a tiny randomly initialised BERT: the block-by-block forward is
transformers' own, BERT-LL's final block replayed on cached states is the full model's, and
each option trains exactly the parts the paper names."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel

from subpop_runner.errors import ConfigError
from subpop_runner.models.bert import (
    BertBelowLastBlock,
    BertClassifier,
    BertEncoder,
    BertLastBlock,
    masked_mean,
)


def token_ids(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """[CLS] words [SEP] then padding; each row a different real length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.int32)
    for row in range(n):
        real = 3 + row % (length - 3)
        ids[row, 0], ids[row, real - 1] = 2, 3
        ids[row, 1 : real - 1] = torch.randint(5, 45, (real - 2,), generator=generator)
    return ids


def test_block_by_block_forward_is_transformers_bert(tiny_bert):
    classifier = BertClassifier(name=str(tiny_bert), n_classes=2).eval()
    reference = BertModel.from_pretrained(tiny_bert).eval()
    ids = token_ids(6, 12)
    with torch.no_grad():
        expected = reference(input_ids=ids.long(), attention_mask=(ids != 0).long())
        *_, (hidden, mask) = classifier.blocks(ids)
        logits = classifier(ids)
    real = mask.unsqueeze(-1)
    torch.testing.assert_close(hidden * real, expected.last_hidden_state * real)
    pooled = reference.pooler(expected.last_hidden_state)
    torch.testing.assert_close(logits, classifier.classifier(pooled))


def test_padding_does_not_change_a_reviews_representation(tiny_bert):
    encoder = BertEncoder(name=str(tiny_bert))
    short = token_ids(4, 10)
    padded = torch.cat([short, torch.zeros(4, 6, dtype=torch.int32)], 1)
    for layer in ("block2", "pooled"):
        torch.testing.assert_close(
            encoder.representation(short, layer), encoder.representation(padded, layer)
        )


def test_a_saved_encoder_loads_as_written_and_tells_distinct_inputs_apart(tiny_bert):
    """Guards ClusterMatch against collapsed features (one cluster, no collateral): every
    weight from_pretrained reads is the one written (none re-initialised, tied or dropped),
    and distinct token ids give distinct features on both layers the presets cluster, the
    head-only option's mean-pooled state and the classifier's pooled [CLS]."""
    from safetensors.torch import load_file

    encoder = BertEncoder(name=str(tiny_bert))
    classifier = BertClassifier(name=str(tiny_bert), n_classes=2).eval()
    torch.testing.assert_close(
        encoder.bert.state_dict(), load_file(tiny_bert / "model.safetensors"), rtol=0, atol=0
    )
    # [CLS] 10 words [SEP], no padding: the rows differ in their words alone
    words = torch.randint(5, 45, (8, 10), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([torch.full((8, 1), 2), words, torch.full((8, 1), 3)], 1).int()
    assert len(torch.unique(ids, dim=0)) == len(ids)
    with torch.no_grad():
        for network in (encoder, classifier):
            features = network.representation(ids, "pooled")
            # identical inputs are exactly 0 apart; here the closest pooled [CLS] are 4e-4
            assert torch.pdist(features).min() > 1e-5, type(network).__name__


def test_last_block_on_cached_states_is_the_full_models(tiny_bert):
    """BERT-LL without recomputation: the final block replayed alone on the states entering
    it gives the full model's logits (fp32 states: exactly; the fp16 cache: closely)."""
    full = BertClassifier(name=str(tiny_bert), n_classes=3, trainable="last_block", seed=4).eval()
    below = BertBelowLastBlock(name=str(tiny_bert))
    last = BertLastBlock(name=str(tiny_bert), n_classes=3, seed=4).eval()
    ids = token_ids(5, 12)
    with torch.no_grad():
        *_, (entering, mask) = full.blocks(ids, stop=2)
        exact = torch.cat([entering, mask.unsqueeze(-1).float()], -1)
        torch.testing.assert_close(last(exact), full(ids))
        cached = below.cached_inputs(ids)
        assert cached.dtype == torch.float16 and cached.shape == (5, 12, 17)
        torch.testing.assert_close(last(cached), full(ids), atol=5e-3, rtol=5e-3)
        torch.testing.assert_close(
            last.representation(cached, "block3"),
            full.representation(ids, "block3"),
            atol=5e-3,
            rtol=5e-3,
        )


def test_ll_trains_the_last_block_pooler_and_classifier_ft_everything(tiny_bert):
    ll = BertClassifier(name=str(tiny_bert), n_classes=2, trainable="last_block")
    trained = {name.split(".")[:4][-1] for name, p in ll.named_parameters() if p.requires_grad}
    names = [name for name, p in ll.named_parameters() if p.requires_grad]
    assert names and all(
        n.startswith(("bert.encoder.layer.2.", "bert.pooler.", "classifier.")) for n in names
    ), trained
    assert any(n.startswith("bert.pooler.") for n in names)
    ft = BertClassifier(name=str(tiny_bert), n_classes=2, trainable="all")
    assert all(p.requires_grad for p in ft.parameters())
    assert not any(p.requires_grad for p in BertBelowLastBlock(name=str(tiny_bert)).parameters())


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(hidden, torch.tensor([[True, True, False]])).item() == 2.0


def test_an_encoder_that_is_not_bert_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="BERT encoder"):
        BertEncoder(name=str(tmp_path))


def test_victims_start_in_training_mode_frozen_parts_in_inference_mode(tiny_bert):
    """from_pretrained returns eval mode; a victim trained in it would skip BERT's dropout."""
    for network in (
        BertClassifier(name=str(tiny_bert), n_classes=2),
        BertLastBlock(name=str(tiny_bert), n_classes=2),
    ):
        assert all(module.training for module in network.modules())
    for frozen in (BertEncoder(name=str(tiny_bert)), BertBelowLastBlock(name=str(tiny_bert))):
        assert not any(module.training for module in frozen.modules())
