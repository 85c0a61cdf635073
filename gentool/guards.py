"""What keeps a run safe: signal handling (finish the step, save, exit 130/143/138), non-finite gradient guards,
and isolating the training RNG stream from work done between epochs."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import torch

from gentool.distributed import SINGLE, World, average_gradients
from gentool.errors import GentoolError
from gentool.plugin_exits import exit_now
from gentool.stops import hangup_is_free, quiet_closed_terminal, stopped


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # each stops a run cleanly (saved, resumable)


class Interrupted(GentoolError):
    """The run was stopped by SIGINT/SIGTERM/SIGUSR1 after saving; exit code 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFinite(GentoolError):
    """A loss or gradient became NaN/Inf; the last good checkpoint is kept."""


class StopSignals:
    """Context manager: the first SIGINT/SIGTERM/SIGUSR1 only raises a flag the loop checks after each step; a second
    one exits at once (checkpoints are written atomically, so the previous one stays intact). SIGUSR1 is what batch
    systems send ahead of a time limit when asked (SLURM's --signal=USR1@SECONDS): it stops the run like SIGTERM,
    with exit code 138 (128 + 10 on Linux)."""

    SIGNALS = STOP_SIGNALS
    # A stop asked for inside the outermost context, kept past the inner context that received it: a signal that
    # lands after a loop's last check (a sweep trial's closing figures, the last part of distill's couplings) still
    # stops what encloses it (the next trial, the student's training) instead of being forgotten.
    pending: int | None = None
    _depth = 0

    def __init__(self, doing: str = "finishing the current step and saving", raise_again: bool = False):
        """`doing`: what the first signal leads to, as its line says. `raise_again`: a second signal raises the
        KeyboardInterrupt of gentool.stops where it lands (for work that keeps nothing half-done, such as distill's
        drawing of couplings, written a whole part at a time), so the command can still print how to continue;
        otherwise it exits at once."""
        self.signum: int | None = None
        self.doing, self.raise_again = doing, raise_again
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            if self.raise_again:
                raise stopped(signum)
            exit_now(128 + signum)  # a plugin hook's event may be running: os._exit would raise there
        self.signum = StopSignals.pending = signum
        quiet_closed_terminal(signum)  # after SIGHUP: what follows would fail to reach the closed terminal
        name = signal.Signals(signum).name
        again = "stop at once" if self.raise_again else "exit at once"
        lead = "\n" if sys.stderr.isatty() else ""  # ends a progress line drawn in place; a log gets no blank line
        print(f"{lead}{name} received: {self.doing} (send again to {again})", file=sys.stderr, flush=True)

    def __enter__(self):
        if StopSignals._depth == 0:  # a new command (or library call): nothing asked of an earlier one carries over
            StopSignals.pending = None
        self.signum = StopSignals.pending  # an enclosing context was asked to stop: so is this one, at its first check
        StopSignals._depth += 1
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
            # A closed terminal (SIGHUP) stops the run as SIGTERM does, saved, but only where SIGHUP would end the
            # process anyway (or gentool's CLI has it): under nohup (ignored) or a caller's own handler it keeps what
            # it was given.
            # (An enclosing StopSignals that took SIGHUP hands it on: the inner loop checks its own flag. Distill's
            # drawing kept on after a SIGHUP that only the outer context, around drawing and training, heard.)
            enclosing = getattr(signal.getsignal(signal.SIGHUP), "__self__", None)
            if hangup_is_free() or isinstance(enclosing, StopSignals):
                self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle)
        return self

    def __exit__(self, *exc):
        StopSignals._depth -= 1
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


class GuardedOptimizer:
    """Wraps an optimizer so that a step with a NaN/Inf gradient is refused before it touches the weights: it either
    raises NonFinite (default) or, with skip=True, drops the step and counts it."""

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, state: "GuardState"):
        self.name, self.optimizer, self.state = name, optimizer, state
        self.averaged = False  # whether this step's gradients are averaged over the ranks already

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.averaged = False
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def average_gradients(self) -> None:
        """Average this step's gradients over the ranks, once. A gradient scaler calls this before it looks for
        infs and decides whether to step: a rank whose scaled gradients overflowed would otherwise skip `step` and
        with it the collective the other ranks wait in; averaged first, an inf reaches every rank and all skip."""
        if not self.averaged:
            average_gradients([p for g in self.optimizer.param_groups for p in g["params"]], self.state.world)
            self.averaged = True

    def step(self, closure=None):
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.average_gradients()
        self.averaged = False
        grads = [p.grad for p in params if p.grad is not None]
        # One fused norm per gradient and a single host synchronisation per step.
        if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            if not self.state.skip:
                raise NonFinite(f"non-finite gradient for the {self.name} at step {self.state.step} "
                                f"(epoch {self.state.epoch}); stopped, the last good checkpoint is kept "
                                f"(--skip-nonfinite drops such steps instead)")
            self.state.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            return None
        return self.optimizer.step(closure)


class GuardState:
    """Where the loop is (for messages), how many steps were skipped, and the ranks gradients are averaged over."""

    def __init__(self, skip: bool, world: World = SINGLE):
        self.skip, self.skipped, self.step, self.epoch, self.world = skip, 0, 0, 0, world
        self.watch: OutputWatch | None = None

    def run_step(self, model, optimizers: dict, step):
        """`step()` (one training step of `model`), with a loss that refuses NaN input handled like a NaN gradient:
        some losses raise instead of returning NaN (binary_cross_entropy: "input should be between 0 and 1"), before
        any gradient exists. When a network's output held NaN, the step stops the run naming that network and the
        step, or with --skip-nonfinite is dropped (returns no metrics)."""
        if self.watch is None or self.watch.model is not model:
            self.watch = OutputWatch(model)
        self.watch.seen.clear()
        try:
            return step()
        except RuntimeError:
            network = self.watch.culprit()
            if network is None:
                raise
        if not self.skip:
            raise NonFinite(f"NaN in the output of the {network} at step {self.step} (epoch {self.epoch}), so its loss "
                            f"cannot be computed; stopped, the last good checkpoint is kept (--skip-nonfinite drops "
                            f"such steps instead)")
        self.skipped += 1
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        return {}


class OutputWatch:
    """Forward hooks on a model's networks noting whether each output held NaN, without a device synchronisation
    (the flags are read only when a step fails), so a failing step can name the network whose output went bad."""

    def __init__(self, model):
        self.model, self.seen = model, []
        self.handles = [net.register_forward_hook(self._hook(name)) for name, net in model.networks().items()]

    def __enter__(self) -> OutputWatch:
        return self

    def __exit__(self, *exc) -> None:
        """Used as a context manager, the watch removes its hooks at the end of the block."""
        for handle in self.handles:
            handle.remove()

    def _hook(self, name: str):
        def note(module, inputs, output):
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            flags = [t.detach().isnan().any() for t in outputs if torch.is_tensor(t) and t.is_floating_point()]
            if flags:
                self.seen.append((name, torch.stack(flags).any()))
        return note

    def culprit(self) -> str | None:
        """The first network in this step whose output held NaN."""
        return next((name for name, flag in self.seen if bool(flag)), None)


def guard_optimizers(optimizers: dict, state: GuardState) -> dict:
    """The optimizers the model steps through during training."""
    return {name: GuardedOptimizer(name, opt, state) for name, opt in optimizers.items()}


def check_weights(model: torch.nn.Module, epoch: int) -> None:
    """Refuse to save weights that hold NaN/Inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFinite(f"weight {name} became non-finite in epoch {epoch}; the last good checkpoint is kept")


@contextlib.contextmanager
def preserved_rng():
    """Run a block without advancing the global RNG, so evaluation or figures between epochs cannot change what
    the training draws next (an interrupted-and-resumed run stays identical to an uninterrupted one)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
