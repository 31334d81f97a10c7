"""The mask mechanism under real optimizers, in checkpoints, and on rewind."""


import lightning as L
import pytest
import torch
from conftest import prune

from lth import config
from lth import masks as M
from lth.arms import ARMS
from lth.imp import Run, train_levels
from lth.module import MaskedModule
from lth.training import MemberCheckpoints, trainer


def _run(tiny, *extra):
    return Run.open(config.load(None, tiny + list(extra)), progress=False)


@pytest.mark.parametrize(
    "optimizer", ["--train.optimizer=sgd", "--train.optimizer=adam"], ids=["sgd-momentum-wd", "adam-wd"]
)
def test_pruned_weights_stay_exactly_zero_after_every_step(tiny, optimizer):
    run = _run(tiny, optimizer, "--train.weight_decay=0.01", "--train.duration=60it")
    module = run.build_module(seed=0)
    weights = {n: w.detach() for n, w in module.weights().items()}
    masks = prune("magnitude", weights, M.ones_like(weights), {n: 0.7 for n in weights}, "layerwise")
    module.set_masks(masks)
    kept_at_start = {n: w.detach().clone() for n, w in module.weights().items()}

    class Watch(L.Callback):
        steps = 0

        def on_train_batch_end(self, trainer, pl_module, *args):
            Watch.steps += 1
            for name, w in pl_module.weights().items():
                assert torch.all(w[~masks[name]] == 0), f"{name} revived at step {trainer.global_step}"

    member = run.as_member(0, ARMS["ticket"], module, masks, None, 0, run.dir.arm(0, "ticket"), run.dir.rewind, run.cfg.seed)
    member.dir.mkdir(parents=True)
    fit = trainer(run.steps, MemberCheckpoints([member]), [Watch()], run.cfg.train, progress=False)
    fit.fit(module, datamodule=run.data([0]))
    assert Watch.steps == 60
    for name, w in module.weights().items():
        assert not torch.equal(w[masks[name]], kept_at_start[name][masks[name]]), "kept weights did not train"
    state = torch.load(member.file("last.ckpt"), map_location="cpu", weights_only=False)["state_dict"]
    for name, mask in masks.items():
        assert torch.equal(state[f"model.{name}_mask"], mask)
        assert torch.all(state[f"model.{name}"][~mask] == 0)
    assert not any("orig" in key for key in state), "parameter names must stay as the model defines them"


def test_level_starts_from_the_exact_rewind_state(tiny):
    """Under `rewind_optimizer: restore`, level 1 begins with the dense run's weights at the rewind step (masked),
    its optimizer state, LR position and global step; and trains on the batches the dense run saw from that step."""
    run = _run(tiny, "--prune.levels=1", "--train.milestones=[10it]", "--prune.rewind_optimizer=restore")
    train_levels([run], pack=1)
    rows = [r.to_json() for r in run.dir.rows()]
    rewind = run.dir.load(run.dir.rewind)
    start = run.dir.load(run.dir.arm(1, "ticket") / "start.ckpt")
    masks = run.dir.load(run.dir.mask(1))
    assert rewind["global_step"] == start["global_step"] == 7
    for name, mask in masks.items():
        assert torch.equal(start["state_dict"][f"model.{name}"], rewind["state_dict"][f"model.{name}"] * mask)
        assert torch.equal(start["state_dict"][f"model.{name}_mask"], mask)
    momentum = [s["momentum_buffer"] for s in start["optimizer_states"][0]["state"].values()]
    assert momentum and all(torch.count_nonzero(m) > 0 for m in momentum), "optimizer state is restored"
    assert start["lr_schedulers"][0]["last_epoch"] == 7
    assert rows[1]["steps_trained"] == run.steps.total_steps - 7

    # The level-1 stream from step 7 is the dense stream with its first 7 batches dropped.
    dense = run.data([0]).train_dataloader()
    dense.global_step = lambda: 0
    first_epoch = [y for _, y in dense]
    dense.global_step = lambda: 7
    resumed = [y for _, y in dense]
    assert len(resumed) == len(first_epoch) - 7
    assert all(torch.equal(a, b) for a, b in zip(first_epoch[7:], resumed))


def test_rewind_zero_restores_the_original_initialisation(tiny):
    run = _run(tiny, "--prune.levels=1", "--prune.rewind=0")
    train_levels([run], pack=1)
    init = run.build_module(seed=0).state_dict()
    start = run.dir.load(run.dir.arm(1, "ticket") / "start.ckpt")["state_dict"]
    masks = run.dir.load(run.dir.mask(1))
    for name, mask in masks.items():
        assert torch.equal(start[f"model.{name}"], init[f"model.{name}"] * mask)


@pytest.mark.parametrize("policy", ["fresh", "restore"])
def test_one_optimizer_policy_for_every_arm_that_starts_at_the_rewind_step(tiny, monkeypatch, policy):
    """`fresh` (OpenLTH's): every arm starts level 1 at step k = 7 with an empty optimizer and the LR the dense run
    had at k (a milestone at step 5 lowered it to 0.05 × 0.1). `restore`: every arm, a fresh init too, starts
    with the dense run's momentum at k. Either way the ticket and its controls start alike."""
    arms = ["ticket", "reinit", "random_prune", "lr_rewind"]
    run = _run(tiny, "--prune.levels=1", "--train.milestones=[5it]", f"--prune.rewind_optimizer={policy}", f"--arms=[{','.join(arms)}]")
    seen, start = [], MaskedModule.on_train_start

    def record(self):
        optimizer = self.trainer.optimizers[0]
        seen.append((self.global_step, optimizer.param_groups[0]["lr"], [len(s) for s in optimizer.state.values()]))
        start(self)

    monkeypatch.setattr(MaskedModule, "on_train_start", record)
    train_levels([run], pack=1)
    assert seen[0] == (0, 0.05, [])  # the dense run
    for step, lr, state in seen[1:]:
        assert step == 7 and lr == pytest.approx(0.005)
        assert state == ([] if policy == "fresh" else [1] * len(state)) and (policy == "fresh" or state)
    assert len(seen) == 1 + len(arms)
    assert {r.rewind_optimizer for r in run.dir.rows()} == {policy}


def test_a_warmup_rises_linearly_from_zero_then_milestones_apply(tiny):
    cfg = config.load(None, tiny + ["--train.warmup=10it", "--train.milestones=[20it]", "--train.lr=0.4", "--train.duration=30it"])
    run = Run.open(cfg, progress=False)
    assert run.steps.warmup_steps == 10
    module = run.build_module(cfg.seed)
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(30):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0 and rates[5] == pytest.approx(0.2) and rates[10:20] == pytest.approx([0.4] * 10)
    assert rates[20:] == pytest.approx([0.04] * 10)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))
    with pytest.raises(config.ConfigError, match="train.warmup: 30it \\(30 steps\\) is not before the end of training"):
        config.load(None, tiny + ["--train.warmup=30it", "--train.duration=30it"])


def test_the_captured_step_reads_the_tensors_its_warm_up_steps_read_so_the_compiled_loss_never_recompiles_in_a_capture(tiny):
    """On CUDA the batches are views of the dataset on the device. The capture once got a fresh copy instead, Dynamo
    (which guards on whether an input is a view) recompiled inside the capture, and with deterministic algorithms
    off Inductor's autotuning synchronised the device there: the capture failed (an H200, issue 38). The CUDA graph
    itself needs a GPU; what it reads is decided here, and Dynamo's guards (on a view's storage offset) are the
    same on a CPU."""
    import torch._dynamo

    run = _run(tiny)
    module = run.build_module(seed=0)
    x_all = torch.randn(64, *run.net.spec.input_shape)
    y_all = torch.randint(0, 4, (64, 1))
    batches = [(x_all[i:i + 16], y_all[i:i + 16]) for i in range(0, 64, 16)]  # views, as TrainBatches hands them over
    assert all(x._base is not None for x, _ in batches)
    staged = [module._staged(x, y) for x, y in batches]
    assert all(x is staged[0][0] and y is staged[0][1] for x, y in staged), "one pair of input tensors for the whole fit"
    assert torch.equal(staged[-1][0], batches[-1][0]) and torch.equal(staged[-1][1], batches[-1][1])

    def first_calls(compiled, x, y):
        compiled(x_all[:8], y_all[:8])  # an earlier fit's shapes (the level before, a pack of another size)...
        compiled(x, y)  # ...so this fit's first warm-up step recompiles, with dynamic shapes and offsets

    torch._dynamo.reset()
    compiled = torch.compile(module.losses, backend="eager")
    first_calls(compiled, *staged[0])
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled(*module._staged(*batches[1]))  # the capture
    torch._dynamo.reset()
    compiled = torch.compile(module.losses, backend="eager")
    first_calls(compiled, *batches[1])  # the old way: the batch itself (a view, offset into the data) in the warm-up...
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception, match="[Rr]ecompil"):
        compiled(batches[2][0].clone(), batches[2][1].clone())  # ...and a fresh copy (offset 0) in the capture
