"""What `gentool sweep` checks of every trial before any work, and `--list` before it lists the trials: each trial's
train options and model config, and what `train` itself refuses before a run starts (a device this machine lacks, a
precision that device cannot run, a batch the model's BatchNorm layers cannot take). Checked per trial at the start,
a value no trial can run with is one line and exit 2, not a sweep that starts, writes sweep.json and fails trial
after trial."""

from __future__ import annotations

from pathlib import Path

from gentool.train_options import TrainOptions


def check_trials(spec, trial_options) -> list[tuple[str, TrainOptions, int]]:
    """Each trial's (run folder name, train options, disk its run asks for: gentool.rundir.run_bytes), every one
    checked; the first bad value raises. `trial_options`: sweep's own (passed in, so that this module and
    gentool.sweep import no circle)."""
    from gentool.data import peek_geometry
    from gentool.registry import get_entry
    from gentool.rundir import run_bytes

    cls = get_entry(spec.model).cls
    manifest, geometry, planned, seen, models = spec.manifest(), {}, [], set(), {}
    for trial in manifest["trials"]:
        opts = trial_options(manifest, trial, spec.out / "-", spec.runtime)
        opts.validate()
        if opts.image_size not in geometry:
            geometry[opts.image_size] = peek_geometry(spec.data, opts.image_size)
        config = cls.config_class.create(geometry[opts.image_size], opts.latent_dim, opts.width, lr=opts.lr,
                                         batch_size=opts.batch_size, **opts.params)
        model = _meta_model(cls, config, opts, models)
        _check_like_train(model, config, opts, seen)
        # what train's own start-up check asks of this run; the data's length is not read here, so the step copies
        # --checkpoint-minutes keeps are counted by --max-minutes alone (a bound: each trial's own check, knowing
        # its steps, may ask for fewer)
        planned.append((trial["run_dir"], opts, run_bytes(model, opts, None)))
    return planned


def _meta_model(cls, config, opts: TrainOptions, models: dict):
    """The trial's model on the meta device (its layers and weights' shapes, none allocated), built once per network
    shape (`models`): a grid of 10,000 trials builds one per shape, not 10,000."""
    from gentool.meta import shapes_only

    shape = (opts.latent_dim, opts.width, opts.image_size, tuple(sorted(opts.params.items())))
    if shape not in models:
        with shapes_only():
            models[shape] = cls(config)
    return models[shape]


def _check_like_train(model, config, opts: TrainOptions, seen: set) -> None:
    """train's own start-up checks of the device, the precision and the batch, once per distinct value (`seen`)."""
    from gentool.device import check_precision, pick_device

    if (opts.device, opts.precision) not in seen:
        check_precision(opts.precision, pick_device(opts.device))
        seen.add((opts.device, opts.precision))
    if opts.batch_size is None and not opts.limit or (id(model), opts.batch_size, opts.limit) in seen:
        return  # the default batch is sized to the data set, as train sizes it
    from gentool.session import check_batch

    check_batch(model, opts.batch_size or config.batch_size, opts.limit or config.batch_size)
    seen.add((id(model), opts.batch_size, opts.limit))


def check_disk(sweep_dir: Path, planned: list[tuple[str, TrainOptions, int]]) -> None:
    """Before the sweep writes anything: its folder's disk holds what its largest trial's run asks for (each trial
    checks the same when it starts: without this, a small disk took sweep.json, results and a figure, then every
    trial failed its own check and the sweep exited 1)."""
    from gentool.paths import require_free

    name, _, need = max(planned, key=lambda run: run[2])
    require_free(sweep_dir, need, "--out", f"trial {name} (its run's checkpoints, as train counts them)",
                 "give the sweep a folder with more room")
