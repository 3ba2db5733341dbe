"""One training step: the phases it composes and the runner that owns it (`GANStep`).

The phases are listed the way StyleGAN2-ADA's training loop lists them: D main, D regularisation, G main, G
regularisation. A phase names the network it trains (D or G: so the optimizer it steps), its interval in steps, and
the loss terms it composes; a term is a named function of the phase's forward (losses.py holds the formulas).
Adding a regulariser is one Term and one line in `build_phases`.

Lazy regularisation: a regularisation phase runs every `interval` steps and, when due, adds its terms to its
main phase's backward and optimizer step, each weighted by the interval (StyleGAN2's lazy R1 with today's
weighting). StyleGAN2 instead steps a separate optimizer for it and rescales Adam's lr and betas by
interval / (interval + 1); we keep one step per network per batch, so a checkpoint continues bit-identically and
the effective R1 strength equals the non-lazy one on average (docs/architecture.md).

What a step does, in order (the order is part of the numbers: augmentation draws from one seeded stream):
G makes the fakes once; D's phase sees augmented reals and detached fakes in one forward, composes its due
terms (R1 differentiates D by the reals, R2 by the fakes: one double backward when both are due), steps; G's
phase (every train.d_steps-th batch) runs D unwrapped and frozen on the augmented fakes (a relativistic loss:
on the detached reals too, in the same forward), steps, then updates the EMA. With train.batch_per_device each phase
loops over micro-batches, accumulating gradients before its one step, and G makes the fakes again in its phase
(`GANStep.run`: one batch is one micro-batch). The parts of the step beyond its terms (EMA, augmentation,
StyleGAN's) are part.py's.

Buffers under several ranks (BN running statistics in G, spectral norm's power-iteration vectors in D) follow
one rule each, so replicas never drift and nothing is modified in place between a forward and its backward:
- G's batch norm takes global-batch statistics (model.sync_bn, dist.sync_batchnorm), so its running
  statistics are the same on every rank by construction; DDP's buffer broadcast from rank 0 changes nothing.
- D has no batch norm in any family. Its spectral-norm vectors advance only in D's phase, where D runs
  under DDP in training mode (broadcast from rank 0 first, then one power iteration from identical weights);
  in G's phase D runs unwrapped and in eval mode, which reads the vectors without touching them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate.optimizer import AcceleratedOptimizer
from torch import nn

from distgan.config import TrainConfig
from distgan.training import losses
from distgan.training.networks import Networks
from distgan.training.part import StepPart
from distgan.utils.stats import Stats

Report = Callable[[str, torch.Tensor | float], None]


@dataclass
class Batch:
    """What one step works on, on the device. y_*: class labels of a conditional model."""

    real: torch.Tensor
    z: torch.Tensor
    y_real: torch.Tensor | None = None
    y_fake: torch.Tensor | None = None
    measure: bool = True  # take gradient norms (log steps only: they cost as much as a layer)
    g_inputs: dict = field(default_factory=dict)  # stylegan2: mixing, layer noise, return_ws (stylegan.py)

    def split(self, m: int) -> list[Batch]:
        """Micro-batches of m rows (train.batch_per_device), the G inputs sliced alike."""
        micro_batches = []
        for s in range(0, len(self.real), m):
            rows = slice(s, s + m)
            gi = dict(self.g_inputs)
            if "mix" in gi:
                gi["mix"] = (gi["mix"][0][rows], gi["mix"][1])
            if "noise" in gi:
                gi["noise"] = [t[rows] for t in gi["noise"]]
            y_real, y_fake = (y[rows] if y is not None else None for y in (self.y_real, self.y_fake))
            micro_batches.append(Batch(self.real[rows], self.z[rows], y_real, y_fake, self.measure, gi))
        return micro_batches


@dataclass
class Context:
    """What a phase's forward leaves for its terms."""

    batch: Batch
    fake: torch.Tensor
    real: torch.Tensor  # the reals as D saw them (requiring grad when a due term differentiates D's input)
    real_logits: torch.Tensor | None = None
    fake_logits: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # D's output on [reals, fakes], for the D(x) / D(G(z)) statistics
    ws: torch.Tensor | None = None  # stylegan2: the per-layer styles the fakes were made from (path length)
    fake_in: torch.Tensor | None = None  # D's phase: the detached fakes D saw (requiring grad for R2)
    _grads: dict[str, torch.Tensor] = field(default_factory=dict)

    def input_grad(self, which: str) -> torch.Tensor:
        """d(sum of D's logits) / d(D's input) for "real" or "fake", with create_graph (R1 and R2 differentiate
        it again). When both are due, one backward gives both: real and fake rows of D never mix, so the sum
        over all logits has each half's own gradient."""
        if which not in self._grads:
            wanted = {
                k: x for k, x in (("real", self.real), ("fake", self.fake_in)) if x is not None and x.requires_grad
            }
            outs = {"real": _got(self.real_logits), "fake": _got(self.fake_logits)}
            total = torch.stack([outs[k].float().sum() for k in wanted]).sum()
            grads = torch.autograd.grad(total, list(wanted.values()), create_graph=True)
            self._grads.update(zip(wanted, grads, strict=True))
        return self._grads[which]


@dataclass(frozen=True)
class Term:
    """A named loss term: `fn(ctx)` is its unweighted value, reported under `name`; `weight` scales it in the
    phase's total (a callable: read each time, for a scheduled weight); `needs_input_grad`: differentiates D's
    output by the reals (they then require grad); `needs_fake_grad`: by the fakes D saw."""

    name: str
    fn: Callable[[Context], torch.Tensor]
    weight: float | Callable[[], float] = 1.0
    needs_input_grad: bool = False
    needs_fake_grad: bool = False


@dataclass
class Phase:
    """`name`: D, Dreg, G or Greg. A regularisation phase (`main` set) shares its main phase's forward and
    optimizer step on the steps where it is due; interval 0: never due."""

    name: str
    interval: int
    terms: list[Term] = field(default_factory=list)
    main: str = ""

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0


def _got(x: torch.Tensor | None) -> torch.Tensor:
    assert x is not None, "a term read an output its phase does not compute"
    return x


def build_phases(
    cfg_train: TrainConfig,
    loss: losses.Loss,
    pl_penalty: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    gamma: Callable[[], float] = lambda: 1.0,
    pack: int = 1,
) -> list[Phase]:
    """The phase list for a config: the one place that says which terms train D and G, and how often.
    pl_penalty(fake, ws): StyleGAN2's path-length term (stylegan.py), in G's regularisation phase.
    gamma(): the R1/R2 weights' factor now (train.gamma_min_ratio's schedule; 1 without one). pack:
    model.d_pack, so that R1 and R2 are taken per packed input."""
    t = cfg_train
    pl_every = t.pl_every if pl_penalty is not None and t.pl_weight > 0 else 0
    pl = []
    if pl_penalty is not None and pl_every:
        pen = pl_penalty
        pl = [Term("pl_penalty", lambda c: pen(c.fake, _got(c.ws)), t.pl_weight * pl_every)]
    every = t.r1_every
    reg = []
    if t.r1_gamma > 0:  # alone, the gradient of the reals' logits only (as before R2 existed)
        r1 = (
            (lambda c: losses.r1_penalty(_got(c.real_logits), c.real, pack))
            if not t.r2_gamma
            else (lambda c: losses.gradient_penalty(c.input_grad("real"), pack))
        )
        reg.append(Term("r1_penalty", r1, lambda: t.r1_gamma / 2 * every * gamma(), needs_input_grad=True))
    if t.r2_gamma > 0:
        reg.append(
            Term(
                "r2_penalty",
                lambda c: losses.gradient_penalty(c.input_grad("fake"), pack),
                lambda: t.r2_gamma / 2 * every * gamma(),
                needs_fake_grad=True,
            )
        )
    return [
        Phase("D", 1, [Term("loss_d", lambda c: loss.d(_got(c.real_logits), _got(c.fake_logits)))]),
        Phase("Dreg", every if reg else 0, reg, main="D"),  # R1 and R2, lazily
        Phase("G", t.d_steps, [Term("loss_g", lambda c: loss.g(c.real_logits, _got(c.fake_logits)))]),
        Phase("Greg", pl_every, pl, main="G"),  # StyleGAN2's path length, counted in G steps
    ]


def zero_grad(opt: AcceleratedOptimizer) -> None:
    """AcceleratedOptimizer.zero_grad calls inspect.signature on every call and .step() probes for optional
    packages (is_lomo_available) on every call: ~8% of the tutorial model's CPU step under py-spy. With no
    gradient accumulation and no loss scaler both are the wrapped optimizer's own calls."""
    opt.optimizer.zero_grad(set_to_none=True)


def opt_step(opt: AcceleratedOptimizer) -> None:
    if opt.scaler is None:
        opt.optimizer.step()
    else:
        opt.step()  # fp16: unscale, skip on overflow, update the scale


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients, on the device (no sync); 0 when a skipped fp16 step left them non-finite."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))


@dataclass
class StepOptions:
    """How the step runs beyond its networks and phases (training/build.py fills it from the config)."""

    parts: list[StepPart] = field(default_factory=list)
    """The parts of the step (part.py), in the order their hooks run: augmentation, packing, StyleGAN's, the EMA."""
    micro: int = 0
    """train.batch_per_device as micro_batch gives it (0: each rank's whole batch in one pass)."""
    g_needs_real: bool = False
    """G's loss reads D's logits on the reals too (a relativistic loss): G's phase runs D on both."""
    d_kwargs: dict = field(default_factory=dict)
    """D's kwargs for one forward of [reals, fakes]: {"batches": 2} where its minibatch std groups each alone."""
    global_batch: int = 0
    """train.batch_size: what the parts draw their random numbers for."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    """Sum over ranks (ADA's statistic, the path-length mean)."""
    clock: Callable[[], float] | None = None
    """train.time_phases only (it synchronises a GPU): the D and G phases' durations are reported."""
    cudagraphs: bool = False
    """Steps are CUDA-graphed (train.compile_mode reduce-overhead): each is marked."""


class GANStep:
    """Owns the whole step: the parts' hooks (part.py), the due phases over the micro-batches, the statistics
    (reduced once per log step by the Trainer's log event)."""

    def __init__(self, nets: Networks, phases: list[Phase], stats: Stats, options: StepOptions | None = None) -> None:
        self.nets, self.phases, self.stats = nets, {p.name: p for p in phases}, stats
        self.options = o = options or StepOptions()
        self.clock, self.micro, self.g_needs_real, self.parts = o.clock, o.micro, o.g_needs_real, list(o.parts)
        self.draws = [p.draws for p in self.parts if p.draws is not None]
        # model.d_freeze: G's phase freezes all of D and then thaws only what trains
        self.d_trainable = [p for p in nets.D_plain.parameters() if p.requires_grad] if nets is not None else []

    def due(self, step: int) -> set[str]:
        """The phases due at a step (counted from 0): D every step; the others by their intervals (G's counted
        so that the last of every d_steps batches trains G; G's regularisation in G steps)."""
        due = {p.name for p in self.phases.values() if p.name not in ("G", "Greg") and p.due(step)}
        if self.phases["G"].due(step + 1):
            due.add("G")
            if self.phases["Greg"].due((step + 1) // self.phases["G"].interval - 1):
                due.add("Greg")
        return due

    def terms(self, main: str, due: set[str]) -> list[Term]:
        """The main phase's terms, then those of its due regularisation phases."""
        return [
            t for p in self.phases.values() if p.name in due and (p.name == main or p.main == main) for t in p.terms
        ]

    def step(self, b: Batch, due: set[str]) -> None:
        """Call on all ranks: one whole step. The parts' G inputs, the due phases, then each part's end of step."""
        o = self.options
        for part in self.parts:
            b.g_inputs.update(part.g_inputs(o.global_batch, o.device, due))
        if o.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last step's graph outputs may go
        self.run(b, due)
        for part in self.parts:
            part.after_step(o.all_reduce, o.global_batch, self.stats.report)

    def run(self, b: Batch, due: set[str]) -> None:
        """The due phases, in order, over micro-batches (train.batch_per_device; one when the batch fits). D's
        phase: each micro-batch's fakes (G without a graph), D's forward and backward, weighted 1/k (every term
        is a mean over images), DDP's no_sync on all but the last; one optimizer step. G's phase likewise, G run
        again per micro-batch (keeping every micro-batch's graph from D's phase would cost the memory that
        accumulation saves); with one micro-batch, the graph of the fakes D's phase made is G's phase's."""
        n, clock = self.nets, self.clock
        micro_batches = b.split(self.micro) if self.micro and self.micro < len(b.real) else [b]
        k, d_terms, g_terms = len(micro_batches), self.terms("D", due), self.terms("G", due)
        one, g_due = k == 1, "G" in due
        t0 = clock() if clock else 0.0
        zero_grad(n.opt_d)
        logits: list[tuple[torch.Tensor, torch.Tensor]] = []
        kept: tuple[torch.Tensor, torch.Tensor | None] | None = None
        for i, mb in enumerate(micro_batches):
            self.window(i, k)
            with torch.set_grad_enabled(one and g_due):  # one pass: G's phase reuses these fakes' graph
                inputs = mb.g_inputs if one else {key: v for key, v in mb.g_inputs.items() if key != "return_ws"}
                out = n.G(mb.z, mb.y_fake, **inputs)
            fake, ws = out if isinstance(out, tuple) else (out, None)
            kept = (fake, ws) if one else None
            with n.acc.no_sync(n.D) if i < k - 1 else contextlib.nullcontext():
                ctx, total = self.d_forward(mb, fake, d_terms)
                n.acc.backward(total / k if k > 1 else total)
            logits.append((_got(ctx.real_logits).detach(), _got(ctx.fake_logits).detach()))
        self.d_step(b)
        t1 = clock() if clock else 0.0
        if g_due:
            n.D_plain.requires_grad_(False).eval()
            zero_grad(n.opt_g)
            for i, mb in enumerate(micro_batches):
                self.window(i, k)
                with n.acc.no_sync(n.G) if i < k - 1 else contextlib.nullcontext():
                    if kept is None:
                        out = n.G(mb.z, mb.y_fake, **mb.g_inputs)
                        fake, ws = out if isinstance(out, tuple) else (out, None)
                    else:
                        fake, ws = kept
                    loss = self.g_forward(mb, fake, g_terms, ws)
                    n.acc.backward(loss / k if k > 1 else loss)
            self.g_step()
        if k > 1:
            self.window(0, 1)
        real, fake = (torch.cat(x) for x in zip(*logits, strict=True)) if k > 1 else logits[0]
        self.end_step(b, due, real, fake, t0, t1)

    def end_step(
        self,
        b: Batch,
        due: set[str],
        real_logits: torch.Tensor,
        fake_logits: torch.Tensor,
        t0: float,
        t1: float,
    ) -> None:
        """The parts' observation of D's outputs and the step's statistics, once per step whatever the
        micro-batches."""
        n, report, clock = self.nets, self.stats.report, self.clock
        for part in self.parts:
            part.observe(real_logits)
        if clock:
            report("time_d_s", t1 - t0)  # D phase, including G's forward for the fakes
            report("time_g_s", clock() - t1)
        with torch.no_grad():  # values stay on the device until the log step; non-finite stays non-finite
            report("d_real", torch.sigmoid(real_logits.detach().float()).mean())
            report("d_fake", torch.sigmoid(fake_logits.detach().float()).mean())
            if b.measure and "G" in due:
                report("grad_norm_g", grad_norm(n.G))
        report("steps", 1)
        if n.acc.scaler is not None:  # Python bools: fp16's scaler syncs for them anyway
            report("skipped_steps_d", float(n.opt_d.step_was_skipped))
            if "G" in due:
                report("skipped_steps_g", float(n.opt_g.step_was_skipped))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Every batch D judges, reals and fakes apart (each draws for its own global batch)."""
        for part in self.parts:
            x = part.augment(x)
        return x

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part.d_input(x)
        return x

    def window(self, i: int, k: int) -> None:
        for d in self.draws:
            d.micro(i, k)

    def _compose(self, terms: list[Term], ctx: Context) -> torch.Tensor:
        total = None
        for term in terms:
            value = term.fn(ctx)
            self.stats.report(term.name, value.detach())
            w = term.weight() if callable(term.weight) else term.weight
            weighted = value * w if w != 1.0 else value
            total = weighted if total is None else total + weighted
        assert total is not None
        return total

    def d_forward(self, b: Batch, fake: torch.Tensor, terms: list[Term]) -> tuple[Context, torch.Tensor]:
        n = self.nets
        real = b.real.detach().requires_grad_(True) if any(t.needs_input_grad for t in terms) else b.real
        fake_in = fake.detach()
        if any(t.needs_fake_grad for t in terms):
            fake_in.requires_grad_(True)
        x = self.d_input(torch.cat([self.augment(real), self.augment(fake_in)]))
        y = torch.cat([b.y_real, b.y_fake]) if b.y_real is not None and b.y_fake is not None else None
        logits = n.D(x, y, **self.options.d_kwargs)  # one DDP forward for both halves
        real_logits, fake_logits = logits.chunk(2)  # as many reals as fakes (packs: as many of each)
        ctx = Context(b, fake, real, real_logits, fake_logits, logits, fake_in=fake_in)
        return ctx, self._compose(terms, ctx)

    def d_step(self, b: Batch) -> None:
        opt_step(self.nets.opt_d)
        if b.measure:
            self.stats.report("grad_norm_d", grad_norm(self.nets.D))  # after step: unscaled under fp16

    def g_forward(self, b: Batch, fake: torch.Tensor, terms: list[Term], ws: torch.Tensor | None) -> torch.Tensor:
        n = self.nets
        if not self.g_needs_real:
            ctx = Context(b, fake, b.real, fake_logits=n.D_for_g(self.d_input(self.augment(fake)), b.y_fake), ws=ws)
            return self._compose(terms, ctx)
        # relativistic: D on the detached reals beside the fakes, in one forward (D is frozen here)
        x = self.d_input(torch.cat([self.augment(b.real.detach()), self.augment(fake)]))
        y = torch.cat([b.y_real, b.y_fake]) if b.y_real is not None and b.y_fake is not None else None
        real_logits, fake_logits = n.D_for_g(x, y, **self.options.d_kwargs).chunk(2)
        return self._compose(terms, Context(b, fake, b.real, real_logits, fake_logits, ws=ws))

    def g_step(self) -> None:
        n = self.nets
        opt_step(n.opt_g)
        for p in self.d_trainable:
            p.requires_grad_(True)
        n.D_plain.train()
        for part in self.parts:
            part.after_g()
