"""The GAN step in one process: losses, one D and one G update per batch, no leaks between phases, bf16."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.configure import load_config
from distgan.data.loader import Loader
from distgan.run.tracking import NullTracker
from distgan.training import losses
from distgan.training.networks import build_networks
from distgan.training.trainer import Trainer


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def make_trainer(overrides: list[str], data: Path | None = None) -> Trainer:
    """A trainer as a run builds it (training/build.py), weights seeded 0, over `data` or synthetic shards of the
    model's image shape (tests that feed their own tensors still hold a real loader)."""
    from distgan.dist import build_accelerator
    from distgan.training.build import build_trainer
    from tests.helpers.shards import shards_for

    base = ["model.g_hidden=[64]", "model.d_hidden=[64]", "model.noise_dim=16", *overrides]
    cfg = load_config(None, base)
    if data is None:
        data = shards_for(cfg.model.image_shape, max(2 * cfg.train.batch_size, 200))
        cfg = load_config(None, [*base, f"data.path={data}"])
    acc = build_accelerator(cfg)
    loader = Loader(cfg.data, cfg.train.batch_size, 0, 1, 0, cfg.model.image_shape)
    return build_trainer(cfg, acc, loader, init_seed=0)


def test_losses_equal_tutorial_log_formulas() -> None:
    real, fake = torch.randn(64) * 3, torch.randn(64) * 3
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    tut_d = -(torch.log(d_real) + torch.log(1 - d_fake)).mean()
    tut_g = -torch.log(d_fake).mean()
    torch.testing.assert_close(losses.d_ns(real, fake), tut_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses.g_ns(None, fake), tut_g, rtol=1e-5, atol=1e-6)
    # where the log form overflows (sigmoid saturates to exactly 0/1), the logit form stays finite
    assert torch.isfinite(losses.d_ns(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_tutorial_model_shapes_and_init() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "mnist_mlp.yaml")
    G, D, opt_g, _ = build_networks(cfg)
    assert [tuple(p.shape) for p in G.parameters()] == [(256, 128), (256,), (784, 256), (784,)]
    assert [tuple(p.shape) for p in D.parameters()] == [(256, 784), (256,), (1, 256), (1,)]
    w = G.net[0].weight
    assert abs(w.std().item() - 0.01) < 0.001 and G.net[0].bias.abs().max() == 0
    assert opt_g.defaults["lr"] == 2e-4 and opt_g.defaults["betas"] == (0.9, 0.999)
    x = G(torch.randn(5, 128))
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert D(x).shape == (5,)


def test_one_d_and_one_g_update_per_batch(make_shards) -> None:
    folder = make_shards(1200, shard_size=400)
    trainer = make_trainer([f"data.path={folder}", "train.epochs=2", "train.batch_size=100", "data.workers=0"], folder)
    state = trainer.train()
    assert state.step == 24 and state.epoch == 2
    for opt in (trainer.opt_d, trainer.opt_g):
        steps = {int(s["step"]) for s in opt.state_dict()["state"].values()}
        assert steps == {24}  # 12 batches x 2 epochs: one step of each optimizer per batch


def _reference_steps(G0, D0, batches, leak: str = "") -> tuple[dict, dict]:
    """The GAN step written by hand, each phase with only its own gradients (leak: a deliberate bug)."""
    G, D = copy.deepcopy(G0), copy.deepcopy(D0)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.9, 0.999))
    g_leak = leak == "d_loss_into_g"  # fake not detached and G's gradient not cleared before its own phase
    for real, z in batches:
        fake = G(z)
        # the same computation as the trainer's (one D forward on real + fake), so the same kernels run
        logits = D(torch.cat([real, fake if g_leak else fake.detach()]))
        if leak != "g_phase_into_d":  # else D keeps the gradient G's loss left in it last step
            opt_d.zero_grad()
        losses.d_ns(*logits.split(len(real))).backward(retain_graph=g_leak)
        opt_d.step()
        if not g_leak:
            opt_g.zero_grad()
        losses.g_ns(None, D(fake)).backward()
        opt_g.step()
    return dict(G.named_parameters()), dict(D.named_parameters())


@pytest.mark.numeric
def test_phases_do_not_leak_into_each_other() -> None:
    """A trainer step equals a reference written by hand, where each phase has only its own gradients.

    Compared by the relative error of each tensor's update (tests/helpers/compare.py): another CPU's kernels
    give last-bit differences that Adam can lift to ~lr in single elements, while a leak between the phases
    changes whole updates. The leaky references below show the bound tells the two apart."""
    from tests.helpers.compare import UPDATE_RTOL, assert_same_updates, worst_update_error

    trainer = make_trainer([])
    G0 = copy.deepcopy(trainer.acc.unwrap_model(trainer.G))
    D0 = copy.deepcopy(trainer.acc.unwrap_model(trainer.D))
    g = torch.Generator().manual_seed(5)
    batches = [(torch.rand(100, 1, 28, 28, generator=g), torch.randn(100, 16, generator=g)) for _ in range(3)]
    for real, z in batches:
        trainer.train_step(real.to(trainer.device), z.to(trainer.device))
    before = {
        **{f"G.{k}": v for k, v in G0.named_parameters()},
        **{f"D.{k}": v for k, v in D0.named_parameters()},
    }
    got = {f"G.{k}": v for k, v in trainer.acc.unwrap_model(trainer.G).named_parameters()}
    got |= {f"D.{k}": v for k, v in trainer.acc.unwrap_model(trainer.D).named_parameters()}

    def flat(gd: tuple[dict, dict]) -> dict:
        return {**{f"G.{k}": v for k, v in gd[0].items()}, **{f"D.{k}": v for k, v in gd[1].items()}}

    assert_same_updates(got, flat(_reference_steps(G0, D0, batches)), before)
    for leak in ("g_phase_into_d", "d_loss_into_g"):
        err = worst_update_error(got, flat(_reference_steps(G0, D0, batches, leak)), before)
        assert err > 4 * UPDATE_RTOL, f"a {leak} leak would go unnoticed (update error {err:.3g})"
    assert all(p.requires_grad for p in trainer.D.parameters())  # D is unfrozen again after G's phase


def test_bf16_runs_without_a_loss_scaler() -> None:
    trainer = make_trainer(["train.precision=bf16"])
    assert trainer.acc.scaler is None
    before = [p.clone() for p in trainer.G.parameters()]
    for _ in range(3):
        trainer.train_step(
            torch.rand(100, 1, 28, 28, device=trainer.device), torch.randn(100, 16, device=trainer.device)
        )
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters(), strict=True))
    c = trainer.stats.local()
    assert np.isfinite(c.total("loss_d")) and np.isfinite(c.total("loss_g")) and c.total("steps") == 3


def test_fp16_on_cpu_is_refused_with_a_reason() -> None:
    from distgan.config import ConfigError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        make_trainer(["train.precision=fp16"])


class _Rows(NullTracker):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})


def test_time_phases_split_the_step_time(make_shards) -> None:
    data = make_shards(n=1200)
    tr = make_trainer(
        [
            f"data.path={data}",
            "train.batch_size=100",
            "train.epochs=2",
            "train.log_every=6",
            "train.time_phases=true",
        ],
        data,
    )
    tr.out.tracker = rows = _Rows()
    tr.train()
    assert [r["step"] for r in rows.rows] == [6, 12, 18, 24]
    for r in rows.rows:
        parts = [r[k] for k in ("time_data_ms", "time_d_ms", "time_g_ms", "time_log_ms")]
        assert all(p >= 0 for p in parts) and r["time_d_ms"] > 0 and r["time_g_ms"] > 0
        # the four parts and the remainder add up to the measured step time (no bound on any share: timing)
        assert sum(parts) + r["time_other_ms"] == pytest.approx(r["step_time_ms"])
        assert r["peak_mem_mb"] > 50
    assert rows.rows[0]["time_log_ms"] == 0 and rows.rows[1]["time_log_ms"] > 0


def test_lr_decay_schedules() -> None:
    from distgan.config import OptimConfig
    from distgan.training.schedule import decay_curve

    def lr_factor(o: OptimConfig, step: int, total: int) -> float:  # what set_schedule multiplies lr_g, lr_d by
        return 1.0 - (1.0 - o.lr_min_ratio) * decay_curve(o, step, total)

    lin = OptimConfig(lr_decay="linear", decay_start=0.5)
    assert [lr_factor(lin, s, 100) for s in (0, 50, 75, 100)] == [1.0, 1.0, 0.5, 0.0]
    cos = OptimConfig(lr_decay="cosine", decay_start=0.0, lr_min_ratio=0.1)
    assert lr_factor(cos, 50, 100) == pytest.approx(0.55) and lr_factor(cos, 100, 100) == pytest.approx(0.1)
    assert lr_factor(OptimConfig(), 99, 100) == 1.0


def test_lr_decay_reaches_the_optimizers(make_shards) -> None:
    data = make_shards(n=1200)
    tr = make_trainer([f"data.path={data}", "train.epochs=2", "optim.lr_decay=linear", "optim.lr_g=1e-3"], data)
    tr.train()  # 24 steps; the last one ran at factor (23 - 12) / 12 below the start
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 11 / 12))
    assert tr.opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * (1 - 11 / 12))


def test_hinge_loss_formulas_and_a_hinge_run(make_shards) -> None:
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - r): 0, 0.5, 2 -> mean 5/6; relu(1 + f): 0, 1, 2.5 -> mean 7/6
    assert losses.d_hinge(real, fake).item() == pytest.approx(5 / 6 + 7 / 6)
    assert losses.g_hinge(None, fake).item() == pytest.approx(-(-2.0 + 0.0 + 1.5) / 3)
    data = make_shards(n=600, shard_size=300)
    tr = make_trainer([f"data.path={data}", "train.epochs=1", "train.loss=hinge", "data.workers=0"], data)
    tr.out.tracker = rows = _Rows()
    tr.train()
    # the logged D loss is the hinge value: logits ~ 0 early on give 1 + 1 (the ns loss would give 2 ln 2 = 1.39)
    assert rows.rows and all(r["loss_d"] >= 0 for r in rows.rows)
    assert rows.rows[-1]["loss_d"] == pytest.approx(2.0, abs=0.3)


def test_unknown_loss_is_refused_by_name() -> None:
    from distgan.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.loss='wgan': use one of ns, hinge, rpgan"):
        load_config(None, ["train.loss=wgan"])


@pytest.mark.numeric
def test_fused_adam_takes_the_same_steps_to_float_tolerance() -> None:
    """optim.fused switches Adam's implementation, not its update: after 3 steps the two agree to fp32 rounding."""
    ref, fused = make_trainer([]), make_trainer(["optim.fused=true"])
    assert fused.opt_g.optimizer.defaults["fused"] and not ref.opt_g.optimizer.defaults["fused"]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        real, z = torch.rand(100, 1, 28, 28, generator=gen), torch.randn(100, 16, generator=gen)
        ref.train_step(real, z)
        fused.train_step(real, z)
    for a, b in zip(ref.G.parameters(), fused.G.parameters(), strict=True):
        # Adam's step is lr x m/sqrt(v): each step moves a weight by about lr = 2e-4; rounding differences
        # between the implementations are ~1e-7 of that, so 1e-6 absolute leaves room and catches a wrong update
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.numeric
def test_compiled_cudagraph_mode_steps_like_eager_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """train.compile_mode=reduce-overhead (issue 26's launch-bound step): the mode reaches inductor, every step
    is marked for CUDA-graph trees, the updates equal eager's to fp32 rounding, the checkpoint state has the
    plain networks' keys, and a compiled trainer restored from it steps exactly as the one it came from.
    On a CPU inductor skips the graphs themselves (tests/unit/test_gpu.py checks that a GPU replays them)."""
    from torch._dynamo.utils import counters

    marks: list[int] = []
    mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: (marks.append(1), mark())[1])
    counters.clear()
    eager = make_trainer([])
    graphed = make_trainer(["train.compile=true", "train.compile_mode=reduce-overhead"])
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.rand(100, 1, 28, 28, generator=gen), torch.randn(100, 16, generator=gen)) for _ in range(4)]
    for real, z in batches[:3]:
        eager.train_step(real, z)
        graphed.train_step(real, z)
    assert len(marks) == 3
    if not torch.cuda.is_available():
        assert counters["inductor"]["cudagraph_skips"] > 0  # asked for graphs; skipped on a CPU device
    for a, b in zip(eager.G_plain.parameters(), graphed.G_plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # as test_fused_adam_takes_the_same_steps...
    state = copy.deepcopy(graphed.state_dict())
    assert not any("_orig_mod" in k for k in [*state["G"], *state["D"]])
    restored = make_trainer(["train.compile=true", "train.compile_mode=reduce-overhead"])
    restored.load_state_dict(state)
    for t in (graphed, restored):
        t.train_step(*batches[3])
    for a, b in zip(graphed.state_dict()["G"].values(), restored.state_dict()["G"].values(), strict=True):
        assert torch.equal(a, b)


def test_compile_mode_is_checked_by_name() -> None:
    from distgan.config import ConfigError

    for bad in (["train.compile=true", "train.compile_mode=fast"], ["train.compile_mode=reduce-overhead"]):
        with pytest.raises(ConfigError, match="train.compile_mode=.*together with train.compile=true"):
            load_config(None, bad)


def test_phases_due_and_events_in_order() -> None:
    """The phases a step runs follow their intervals (G on the last of every d_steps batches, lazy R1 every
    r1_every steps from step 0); events fire in registration order, each when its condition holds."""
    from distgan.training.events import Schedule, every
    from distgan.training.step import GANStep, build_phases

    cfg = load_config(None, ["train.d_steps=2", "train.r1_gamma=1", "train.r1_every=4"])
    step = GANStep(None, build_phases(cfg.train, losses.LOSSES["ns"]), None)  # type: ignore[arg-type]
    assert [sorted(step.due(s)) for s in range(5)] == [
        ["D", "Dreg"],
        ["D", "G"],
        ["D"],
        ["D", "G"],
        ["D", "Dreg"],
    ]
    assert [t.name for t in step.terms("D", {"D", "Dreg"})] == ["loss_d", "r1_penalty"]
    assert [t.name for t in step.terms("D", {"D"})] == ["loss_d"]
    fired: list[tuple[str, int]] = []
    events = Schedule()
    events.on("a", every(2), lambda s: fired.append(("a", s)))
    events.on("b", every(3), lambda s: fired.append(("b", s)))
    events.on("never", every(0), lambda s: fired.append(("never", s)))
    for s in range(1, 7):
        events.fire(s)
    assert fired == [("a", 2), ("b", 3), ("a", 4), ("a", 6), ("b", 6)]
    with pytest.raises(ValueError, match="twice"):
        events.on("a", every(1), print)


@pytest.mark.parametrize(("key", "value"), [("step", 12.5), ("epoch", -1), ("images_seen", "100"), ("step", None)])
def test_a_checkpoint_whose_counters_are_not_whole_numbers_is_refused(key: str, value: object) -> None:
    """Issue 45: an edited checkpoint (checksums rewritten too) with trainer.step=12.5 resumed and then died in a
    traceback; now it is refused by name before anything is restored."""
    from distgan.run.errors import CheckpointError

    trainer = make_trainer([])
    state = trainer.state_dict()
    w = trainer.G_plain.state_dict()["net.0.weight"].clone()
    with pytest.raises(CheckpointError, match=f"counter {key}={value!r} is not a whole number"):
        trainer.load_state_dict({**state, key: value})
    assert torch.equal(trainer.G_plain.state_dict()["net.0.weight"], w) and trainer.state.step == 0
