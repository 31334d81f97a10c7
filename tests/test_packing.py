"""K runs packed into one network train exactly as K separate runs, to float rounding."""

import pytest
import torch

from lth import config, packing
from lth.imp import Run, run_experiments
from lth.models import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_packed_network_computes_its_members_outputs(name):
    shape = (1, 40) if name.startswith("mnist1d") else (3, 32, 32)
    singles = []
    for seed in range(3):
        torch.manual_seed(seed)
        singles.append(MODELS[name](shape, 7).eval())
    packed = MODELS[name](shape, 7, pack=3).eval()
    packed.load_state_dict(packing.pack_state([m.state_dict() for m in singles]))
    x = [torch.randn(2, *shape) for _ in singles]
    with torch.no_grad():
        out = packed(torch.cat(x, 1)).view(2, 3, 7)
        for k, model in enumerate(singles):
            torch.testing.assert_close(out[:, k], model(x[k]), rtol=1e-4, atol=1e-5)
    for single, part in zip(singles, packing.unpack_state(packed.state_dict(), 3)):
        assert all(torch.equal(single.state_dict()[key], part[key]) for key in part)


@pytest.fixture
def float64():
    """In float32, packed and separate runs differ by rounding (grouped and plain convolutions sum in different
    orders), and a ReLU or BN network amplifies that within a few steps; in float64 the rounding is ~1e-16,
    so any real difference (a member's data, init, masks, statistics or optimizer state) stands out."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.slow
def test_packed_runs_train_as_separate_runs(tiny, tmp_path, float64, capsys):
    """Three seeds × (ticket, reinit, random prune) of a ResNet with batch norm, SGD with momentum and weight
    decay, rewound to step 3 with the dense run's momentum (`rewind_optimizer: restore`, so that packs start
    from non-empty optimizer states): packed 9 at a time, and one by one. Each run's own init, masks, data
    order, batch-norm statistics and optimizer state must come out the same."""
    args = tiny + ["--model=resnet20", "--seed=[0,1,2]", "--arms=[ticket,reinit,random_prune]", "--prune.levels=1"]
    args += ["--train.duration=10it", "--prune.rewind=3it", "--prune.rewind_optimizer=restore"]
    runs = {}
    for pack in (1, 9):
        cfgs = config.load_seeds(None, args + [f"--pack={pack}", f"--out_dir={tmp_path / str(pack)}"])
        runs[pack] = run_experiments(cfgs, progress=False)
    # Level 0: the 3 seeds' tickets; level 1: all 9, since one optimizer policy holds for every arm.
    err = capsys.readouterr().err
    assert err.count("(a pack of 3)") == 1 and err.count("(a pack of 9)") == 1
    for separate, packed in zip(runs[1], runs[9]):
        assert separate.dir.root.name == packed.dir.root.name
        rows = {(r.level, r.arm): r.to_json() for r in separate.dir.rows()}
        for row in (r.to_json() for r in packed.dir.rows()):
            theirs = rows[(row["level"], row["arm"])]
            assert row["mask_sha256"] == theirs["mask_sha256"]
            assert row["test_acc"] == pytest.approx(theirs["test_acc"], abs=0.01)
            a = separate.dir.load(separate.dir.arm(row["level"], row["arm"]) / "final.ckpt")
            b = packed.dir.load(packed.dir.arm(row["level"], row["arm"]) / "final.ckpt")
            assert a["global_step"] == b["global_step"] == separate.steps.total_steps
            for key, value in a["state_dict"].items():
                if value.is_floating_point():
                    torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-9, atol=1e-9, msg=key)
            momentum = lambda c: [s["momentum_buffer"] for s in c["optimizer_states"][0]["state"].values()]  # noqa: E731
            for x, y in zip(momentum(a), momentum(b)):
                torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU every network is packed by default")
def test_on_a_cpu_small_networks_are_packed_by_default_and_large_ones_are_not():
    pack = lambda path, *args: Run.open(config.load(path, ["--seed=0", *args])).pack  # noqa: E731
    assert pack("experiments/quickstart.yaml") == 16  # 15,000 MACs per example
    assert pack("experiments/quickstart.yaml", "--model=mnist1d_cnn") == 16
    assert pack("experiments/lenet300_mnist.yaml") == 1  # 266,200
    assert pack("experiments/resnet20_cifar10.yaml") == 1
    assert pack("experiments/resnet20_cifar10.yaml", "--pack=4") == pack("experiments/quickstart.yaml", "--pack=4") == 4


def test_a_hook_s_state_follows_its_member_into_another_pack():
    """A hook keeps each run's state in that run's own entry (`member_states`): a run packed second of two, stopped,
    and resumed first beside another run gets its own state back, not the pack's or another member's."""
    packed = {"state_dict": {"w": torch.arange(4.0)}, "optimizer_states": []}
    for k, state in enumerate(packing.member_states(packed, 2)):
        state["hook"] = {"distances": [0.1 * k]}
    first, second = packing.unpack_checkpoint(packed, 2)
    other = {"state_dict": {"w": torch.zeros(2)}, "optimizer_states": [], "lth": {}}
    repacked = packing.pack_checkpoint([second, other])
    states = packing.member_states(repacked, 2)
    assert states[0]["hook"] == {"distances": [0.1]} and "hook" not in states[1]
    assert torch.equal(repacked["state_dict"]["w"], torch.tensor([2.0, 3.0, 0.0, 0.0]))
