"""Hugging Face `transformers` models by import path, built from a config (`lth.hf`): they train under masks, and
prune what Chen et al. (2020) prune."""

from pathlib import Path

import pytest
import torch
from conftest import TINY

from lth import cli, config
from lth.architecture import Architecture
from lth.models import dense_layers, prunable_names
from lth.run_dir import RunDir

pytest.importorskip("transformers", reason="the transformers extra: pip install -e '.[transformers]'")

VIT = ["--model.name=transformers:ViTForImageClassification",
       "--model.kwargs={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, patch_size: 4}"]
QUICKSTART = str(Path("experiments/quickstart.yaml").resolve())


def test_a_vit_from_a_config_trains_under_masks_with_its_embeddings_and_head_dense(tmp_path):
    args = [*(a for a in TINY if not a.startswith("--model=")), *VIT, "--arms=[ticket,reinit]", "--prune.levels=1", "--train.optimizer=adamw",
            "--train.lr=0.001", f"--out_dir={tmp_path}"]
    assert cli.main(["run", QUICKSTART, *args]) == 0
    run_dir = RunDir(config.load(QUICKSTART, args).run_dir())
    assert {(row.level, row.arm) for row in run_dir.rows()} == {(0, "ticket"), (1, "ticket"), (1, "reinit")}
    masks = run_dir.load(run_dir.mask(1, "ticket"))
    assert masks["classifier.weight"].all() and masks["vit.embeddings.patch_embeddings.projection.weight"].all()
    encoder = [m for name, m in masks.items() if name.startswith("vit.layers.")]
    assert sum(int(m.sum()) for m in encoder) / sum(m.numel() for m in encoder) == pytest.approx(0.5, abs=1e-3)  # TINY's fraction, global
    query = masks["vit.layers.0.attention.q_proj.weight"]
    state = run_dir.load(run_dir.arm(1, "ticket") / "final.ckpt")["state_dict"]
    trained = state["model.vit.layers.0.attention.q_proj.weight"]
    assert (trained[~query] == 0).all() and (trained[query] != 0).all()  # trained, and what was pruned stays exactly 0
    import transformers

    assert config.load(QUICKSTART, args).identity()["code"]["model"] == f"transformers {transformers.__version__}"  # a new version, a new run


def test_the_layers_a_bert_prunes_are_the_ones_chen_et_al_prune():
    """VITA-Group/BERT-Tickets, `pruning_model`: each encoder layer's query, key, value, attention output,
    intermediate and output, and the pooler; not the embeddings, norms or classifier."""
    kwargs = (("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2), ("intermediate_size", 64), ("vocab_size", 100))
    bert = Architecture("transformers:BertForSequenceClassification", (16,), 2, kwargs).build()
    pruned = [name for name in prunable_names(bert) if name not in dense_layers(bert)]
    per_layer = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense"]
    assert pruned == [f"bert.encoder.layer.{i}.{p}.weight" for i in range(2) for p in per_layer] + ["bert.pooler.dense.weight"]
    assert bert(torch.randint(0, 100, (3, 16))).logits.shape == (3, 2)  # sized by the dataset's class count


def test_a_transformer_s_macs_count_each_linear_layer_once_per_token():
    """A Linear layer on L tokens multiplies its weights L times; the pooler and the classifier, on the [CLS] token,
    once. (Counted per output channel before: a ViT's layers were counted once per hidden unit, not per token.)"""
    from lth.flops import macs
    from lth.inputs import Fields

    kwargs = (("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2), ("intermediate_size", 64), ("vocab_size", 100))
    for length in (7, 12):
        shape = Fields((("attention_mask", (length,), "int64"), ("input_ids", (length,), "int64")))
        bert = Architecture("transformers:BertForSequenceClassification", shape, 2, kwargs).build()
        encoder = 2 * (4 * 32 * 32 + 2 * 32 * 64)
        assert macs(bert, shape) == length * encoder + 32 * 32 + 32 * 2
