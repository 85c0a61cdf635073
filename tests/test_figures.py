"""Figures: per-run loss.png and progress.gif, latent walks, sweep layouts and `summary DIR`."""

import json

import imageio.v3 as iio
import pytest

from gentool import figures, sweep_figures


def test_panels_follow_the_metric_names():
    assert [figures.panel_of(k) for k in ("loss", "d_loss", "g_loss", "critic_loss")] == ["losses"] * 4
    assert [figures.panel_of(k) for k in ("d_acc_real", "d_acc_fake")] == ["accuracy"] * 2
    assert [figures.panel_of(k) for k in ("jsd", "emd", "fid", "modes")] == ["distance estimate"] * 2 + ["FID", "modes"]
    assert [figures.panel_of(k) for k in ("reconstruction", "kl")] == ["reconstruction", "kl"]
    assert figures.primary_loss(["reconstruction", "kl", "loss"]) == "loss"
    assert figures.primary_loss(["d_loss", "g_loss", "jsd"]) == "d_loss"


def test_losses_a_tenth_of_their_panel_or_less_get_a_panel_of_their_own():
    records = [{"epoch": 1, "loss": 0.024, "critic_loss": 1.95, "heldout_loss": 0.03},
               {"epoch": 2, "loss": 0.018, "critic_loss": 2.0, "heldout_loss": 0.02}]
    assert figures.group_panels(["loss", "critic_loss", "heldout_loss"], records) == {
        "losses": ["critic_loss"], "loss": ["loss", "heldout_loss"]}
    gan = [{"epoch": 1, "d_loss": 1.3, "g_loss": 0.2}]  # within 10×: one panel, as before
    assert figures.group_panels(["d_loss", "g_loss"], gan) == {"losses": ["d_loss", "g_loss"]}


def test_loss_png_draws_every_group_and_events(tmp_path):
    records = [{"epoch": e, "step": 10 * e, "seconds": 1.0, "d_loss": 1.3 - 0.01 * e, "g_loss": 0.7 + 0.02 * e,
                "d_acc_real": 0.6, "d_acc_fake": 0.55, "jsd": 0.05 * e} for e in range(1, 13)]
    for r in records[4::5]:
        r.update(fid=100.0 / r["epoch"], modes=8)
    history = {"model": "gan", "epochs": records, "events": [{"epoch": 6, "kind": "resumed", "message": "x"}]}
    path = figures.plot_losses(history, tmp_path / "loss.png", "gan")
    height, width = iio.imread(path).shape[:2]
    assert 1.1 * height < width < 2 * height  # five panels, three to a row: losses, accuracy, JSD, FID, modes
    assert figures.plot_losses({"epochs": []}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_values_a_figure_cannot_plot_are_left_out_of_it(tmp_path):
    """Issue 26: a hook recorded 1e308 and loss.png was not drawn on any later epoch (matplotlib's axis overflowed)."""
    records = [{"epoch": e, "loss": 1.0 / e, "huge": 1e308 if e == 2 else -1e308, "big_loss": 10**400}
               for e in (1, 2, 3)]
    path = figures.plot_losses({"epochs": records + [{"epoch": 4, "loss": 0.2, "partial": True, "huge": 1e308,
                                                      "epoch_fraction": 0.5}]}, tmp_path / "loss.png")
    assert path.exists() and figures.plot_losses({"epochs": [{"epoch": 1, "huge": 1e308}]}, tmp_path / "x.png") is None


def test_loss_png_marks_a_partial_epoch_apart(tmp_path):
    plt = figures.pyplot()
    full = [{"epoch": e, "step": 4 * e, "d_loss": 1.0 / e} for e in (1, 2)]
    partial = {"epoch": 3, "step": 9, "d_loss": 0.2, "partial": True, "images_seen": 64, "epoch_fraction": 0.25}
    ax = plt.figure().add_subplot()
    figures._plot_metric(ax, "d_loss", full + [partial])
    curve, mark, link = ax.get_lines()
    assert list(curve.get_xdata()) == [1, 2] and list(mark.get_xdata()) == [2.25]
    assert mark.get_marker() == "D" and mark.get_fillstyle() == "none" and link.get_linestyle() == ":"
    assert mark.get_label() == "d_loss, epoch 3 so far (25%)"
    ax = plt.figure().add_subplot()
    figures._plot_metric(ax, "d_loss", [{**partial, "epoch": 1}])  # stopped inside the first epoch: the mark alone
    [mark] = ax.get_lines()
    assert list(mark.get_xdata()) == [0.25] and mark.get_marker() == "D"
    figures.whole_epoch_axis(ax, [{**partial, "epoch": 1}])
    assert ax.get_xlim() == (0, 1.25)  # whole-epoch ticks, not 0.2450, 0.2475, … crowding each other
    plt.close("all")
    history = {"model": "gan", "epochs": [partial]}
    assert iio.imread(figures.plot_losses(history, tmp_path / "loss.png")).std() > 0
    assert figures.metric_keys([partial]) == ["d_loss"]


@pytest.mark.parametrize("stopped_in_epoch_1", [False, True])
def test_event_labels_stay_inside_their_panel_clear_of_the_tick_labels(tmp_path, monkeypatch, stopped_in_epoch_1):
    """A distilled student's "initialised" event (epoch 0, at the axis's start) was labelled left of its line, over
    the y tick labels: every label now lies inside its panel, and an event at the axis's end too."""
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    records = [{"epoch": e, "step": 10 * e, "seconds": 1.0, "images_per_second": 9.0, "loss": 1 / e,
                "critic_loss": 2.0 + e, "adversarial_weight": 8.0 - e} for e in (1, 2, 3)]
    if stopped_in_epoch_1:  # one partial record: the x-axis starts at 0 exactly
        records = [{**records[0], "partial": True, "epoch_fraction": 0.5}]
    events = [{"epoch": 0, "kind": "initialised"}, {"epoch": records[-1]["epoch"], "kind": "divergence"}]
    figures.plot_losses({"epochs": records, "events": events}, tmp_path / "loss.png")
    fig = drawn[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = 0
    for ax in (a for a in fig.axes if a.get_visible()):
        panel = ax.get_window_extent(renderer)
        ticks = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            labels += 1
            assert panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
            assert not any(box.overlaps(t) for t in ticks), text.get_text()
    figures.pyplot().close(fig)
    assert labels == 2 * len([a for a in fig.axes if a.get_visible()])


@pytest.mark.parametrize("model", ["gan", "wgan"])
def test_training_writes_loss_png_and_progress_gif(invoke, mnist_root, tmp_path, model):
    run = tmp_path / model
    result = invoke("train", model, "--data", "mnist", "--data-dir", mnist_root, "--epochs", "3", "--limit", "32",
                    "--batch-size", "32", "--width", "0.25", "--out", run, "-q")
    assert result.exit_code == 0, result.output
    loss = iio.imread(run / "loss.png")
    assert loss.shape[0] > 200 and loss.shape[1] > 2 * loss.shape[0]  # two or three panels in a row
    frames = iio.imread(run / "progress.gif", index=None)
    assert frames.shape == (3, 8 * 30 + 2 + 14, 8 * 30 + 2, 3)  # one 8×8 grid per epoch under an epoch caption
    assert frames[0].std() > 0 and not (frames[0] == frames[-1]).all()


def test_interpolate_writes_a_looping_walk(invoke, mnist_root, tmp_path):
    run = tmp_path / "vae"
    assert invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "32",
                  "--width", "0.25", "--out", run, "-q").exit_code == 0
    walk = tmp_path / "walk.gif"
    result = invoke("sample", run / "last.safetensors", "--interpolate", "--grid", "2x3", "--frames", "3", "--out",
                    walk, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 12
    frames = iio.imread(walk, index=None)
    assert frames.shape[1:3] == (2 * 30 + 2, 3 * 30 + 2) and 2 <= len(frames) <= 12
    bad = invoke("sample", run / "last.safetensors", "--interpolate", "--out", tmp_path / "walk.png")
    assert bad.exit_code == 2 and "a .gif path" in bad.output
    old = invoke("sample", run / "last.safetensors", "--interpolate", "--steps", "3", "--out", tmp_path / "w.gif")
    assert old.exit_code == 2 and "--steps: not a setting of vae's sampler" in old.stderr and "--frames" in old.stderr


def test_sweep_layout_puts_latents_in_columns_and_the_rest_in_rows():
    grid = {"width": [0.5, 1.0], "latent_dim": [2, 5, 10], "clip": [0.01, 0.02]}
    col, row_axes, rows, cols = sweep_figures.sweep_layout(grid)
    assert (col, row_axes, cols) == ("latent_dim", ["width", "clip"], [2, 5, 10])
    assert rows == [(0.5, 0.01), (0.5, 0.02), (1.0, 0.01), (1.0, 0.02)]
    assert sweep_figures.sweep_layout({"clip": [1, 2]})[:2] == ("clip", [])


def test_heatmap_leaves_missing_trials_blank(tmp_path):
    grid = {"latent_dim": [2, 5], "width": [0.5, 1.0]}
    trials = [{"values": {"latent_dim": l, "width": w}, "final": {"loss": l * w} if l == 2 else None}
              for l in grid["latent_dim"] for w in grid["width"]]
    path = sweep_figures.plot_heatmap(grid, trials, "loss", tmp_path / "heat.png")
    assert iio.imread(path).shape[0] > 150


def test_summary_compares_the_runs_in_a_folder(invoke, mnist_root, tmp_path):
    for name, latent in (("a", "2"), ("b", "3")):
        assert invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "32",
                      "--width", "0.25", "--latent-dim", latent, "--out", tmp_path / "runs" / name, "-q").exit_code == 0
    result = invoke("summary", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["run"], r["model"], r["latent_dim"], r["width"], r["epochs"]) for r in rows] == [
        ("a", "vae", 2, 0.25, 1), ("b", "vae", 3, 0.25, 1)]
    assert all(r["loss"] > 0 for r in rows)
    table = invoke("summary", tmp_path / "runs" / "a")
    assert table.exit_code == 0 and "latent_dim" in table.stdout
    assert invoke("summary", tmp_path / "runs" / "a" / "last.safetensors", "--json").exit_code == 0
    empty = invoke("summary", tmp_path / "runs" / "a" / "samples")
    assert empty.exit_code == 2 and "no run directories" in empty.output


def test_a_long_epoch_redraws_its_grid_and_curves_on_a_time_interval(mnist_root, tmp_path, monkeypatch):
    """Inside an epoch, every PROGRESS_SECONDS: samples/latest.png and loss.png with the epoch in progress."""
    import gentool.train as t
    from gentool.figures import FigureHook
    from gentool.hooks import TrainHook

    seen = []

    class Look(TrainHook):
        def on_progress(self, session, history, reporter):
            run = session.run_dir
            seen.append((history["epochs"][-1], (run / "loss.png").is_file(), (run / "samples/latest.png").is_file()))

    monkeypatch.setattr(t, "PROGRESS_SECONDS", 0.0)
    t.train(t.TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), limit=64, batch_size=16, epochs=1,
                           width=0.25, out=str(tmp_path / "r"), checkpoint_every=0), hooks=[FigureHook(), Look()])
    assert [r["epoch_fraction"] for r, _, _ in seen] == [0.25, 0.5, 0.75]  # not after the last step: the epoch's own
    assert all(r["partial"] and loss and grid for r, loss, grid in seen)


def test_progress_gif_is_drawn_again_when_an_epoch_grid_is_newer(tmp_path):
    """A signal-stopped run (a resumed one too) never reaches the end that draws progress.gif: the stop's figures
    draw it when an epoch grid is newer than it, or it is missing."""
    import os

    samples = tmp_path / "samples"
    samples.mkdir()
    assert not figures.gif_is_stale(tmp_path)  # no epoch grid yet: nothing to draw
    (samples / "epoch_0001.png").write_bytes(b"")
    assert figures.gif_is_stale(tmp_path)
    (tmp_path / "progress.gif").write_bytes(b"")
    os.utime(samples / "epoch_0001.png", (1, 1))
    assert not figures.gif_is_stale(tmp_path)
    (samples / "epoch_0002.png").write_bytes(b"")
    os.utime(tmp_path / "progress.gif", (2, 2))
    assert figures.gif_is_stale(tmp_path)


def test_gif_frames_read_back_grey_exactly_and_colour_closely(tmp_path):
    """write_gif: grey frames (2-D, or RGB with equal channels: a captioned MNIST grid) keep every level; colour ones
    go through Pillow's fast octree (median cut took a minute for a CIFAR-10 progress.gif), close to the original."""
    import imageio.v3 as iio
    import numpy as np

    from gentool.images import write_gif

    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, (20, 24), dtype=np.uint8) for _ in range(3)]
    as_rgb = [np.repeat(g[..., None], 3, axis=2) for g in grey]
    smooth = np.linspace(0, 255, 20 * 24 * 3).reshape(20, 24, 3).astype(np.uint8)
    colour = [np.roll(smooth, k, axis=1) for k in range(3)]
    for name, frames in (("grey", grey), ("rgb", as_rgb), ("colour", colour)):
        write_gif(tmp_path / f"{name}.gif", frames, [100, 100, 500])
        back = iio.imread(tmp_path / f"{name}.gif", index=None)
        assert back.shape[0] == 3
        back = back[..., :3] if back.ndim == 4 else np.repeat(back[..., None], 3, axis=3)
        error = np.abs(back.astype(int) - np.stack([np.atleast_3d(f) for f in frames]).astype(int)).mean()
        assert error == 0 if name != "colour" else error < 6, (name, error)
