"""`lth export`: a trained ticket as a plain network that computes what the masked one does."""

import subprocess
import sys

import pytest
import torch
from conftest import prune

from lth import cli, config, export
from lth import masks as M
from lth.data import DATASETS
from lth.models import MODELS
from lth.module import MaskedModule


@pytest.mark.slow
def test_an_exported_ticket_computes_the_masked_networks_outputs_with_the_masks_counts(tiny, tmp_path, capsys):
    args = tiny + ["--model=resnet20"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    out = tmp_path / "ticket.pt"
    assert cli.main(["export", str(run_dir), "--level=2", f"--out={out}", "--sparse"]) == 0
    assert "outputs equal the masked network's" in capsys.readouterr().out

    exported = torch.load(out, weights_only=False)
    network = MODELS[exported["model"]](exported["input_shape"], exported["num_classes"]).eval()
    network.load_state_dict(exported["state_dict"])  # a plain network: no mask buffers
    cfg = config.load("experiments/quickstart.yaml", args)
    spec = DATASETS[cfg.data.name]
    masked = MaskedModule(MODELS["resnet20"](spec.input_shape, spec.num_classes), cfg.train, config.steps(cfg), spec.num_classes).eval()
    masked.load_state_dict(torch.load(run_dir / "level_02" / "ticket" / "final.ckpt", weights_only=False)["state_dict"])
    x = torch.randn(8, *spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(network(x), masked(x)[:, 0], rtol=0, atol=1e-5)
    masks = masked.masks()
    kept = sum(int(m.sum()) for m in masks.values())
    assert sum(int(exported["state_dict"][n].count_nonzero()) for n in masks) <= kept
    assert abs(kept / sum(m.numel() for m in masks.values()) - 0.25) < 0.01  # two levels of 50%
    for name, csr in exported["sparse"].items():
        assert csr.layout == torch.sparse_csr and csr.values().numel() <= int(masks[name].sum())
        assert torch.equal(csr.to_dense(), exported["state_dict"][name].flatten(1))


def test_export_of_a_level_not_trained_or_a_2_4_mask_on_a_cpu(tiny, tmp_path, capsys):
    args = tiny + ["--prune.method=nm", "--prune.nm=[2,4]", "--prune.schedule=oneshot", "--prune.target=0.5", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    capsys.readouterr()
    assert cli.main(["export", str(run_dir), "--level=3", f"--out={tmp_path / 'x.pt'}"]) == 2
    err = capsys.readouterr().err
    assert "level 3 of ticket has not finished training" in err and err.count("\n") == 1 and not (tmp_path / "x.pt").exists()
    assert cli.main(["export", str(tmp_path), "--level=1", f"--out={tmp_path / 'x.pt'}"]) == 2
    assert "is not an lth run directory" in capsys.readouterr().err
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={tmp_path / 'nm.pt'}", "--sparse"]) == 0
    if not torch.cuda.is_available():
        assert "CSR copy instead of a 2:4 semi-structured one (no CUDA device)" in capsys.readouterr().err
    assert (tmp_path / "nm.pt").exists()


def test_a_2_4_copy_read_from_an_export_in_a_new_process_can_be_used(tmp_path):
    """torch fills a semi-structured tensor class's operations when a process makes its first one, and unpickling
    makes none: the first product with a copy read from an export failed on the H200. The copy is made here on the
    CPU from its parts (the kernels need a GPU; the operations table does not), and read in a fresh process."""
    from torch.sparse import SparseSemiStructuredTensorCUTLASS as Cutlass

    copy = Cutlass(torch.Size([32, 64]), packed=torch.zeros(32, 32, dtype=torch.half), meta=torch.zeros(32, 2, dtype=torch.int16), packed_t=None,
                   meta_t=None, compressed_swizzled_bitmask=None)
    torch.save({"sparse": {"fc.weight": copy}}, tmp_path / "ticket.pt")
    script = f"from lth.export import sparse_copies; print(type(sparse_copies({str(tmp_path / 'ticket.pt')!r})['fc.weight'].detach()).__name__)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "SparseSemiStructuredTensorCUTLASS", done.stderr[-1000:]


def test_the_2_4_layout_handed_to_the_kernel_holds_two_of_every_four_along_the_input():
    """NVIDIA ASP's permutation: the nm masks' groups run along input channels at a fixed kernel position, so the
    kernel's matrix must list input channels innermost; flattening [out, in, kh, kw] as stored would not."""
    g = torch.Generator().manual_seed(0)
    weights = {"conv.weight": torch.randn(32, 16, 3, 3, generator=g), "fc.weight": torch.randn(32, 64, generator=g)}
    masks = prune("nm", weights, M.ones_like(weights), {n: 0.5 for n in weights})
    for name, w in weights.items():
        pruned = w * masks[name]
        groups = (export.semi_structured_layout(pruned) != 0).view(32, -1, 4).sum(-1)
        assert groups.max() <= 2 and groups.float().mean() == 2, name
        torch.testing.assert_close(export.semi_structured_layout(pruned).view(pruned.movedim(1, -1).shape).movedim(-1, 1), pruned)
    stored_order = (weights["conv.weight"] * masks["conv.weight"] != 0).flatten(1).view(32, -1, 4).sum(-1)
    assert (stored_order > 2).any(), "the stored order mixes kernel positions within a group"


def test_shapes_the_2_4_kernels_reject_are_named_not_raised():
    assert export.semi_structured_problem((32, 64)) is None
    assert export.semi_structured_problem((300, 784)) == "its 2:4 matrix is 300×784, and the kernels need multiples of 32×64"
    assert "100×40" in export.semi_structured_problem((100, 40))
