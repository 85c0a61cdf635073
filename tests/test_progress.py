"""Progress output: the rich bar reads the running means only when it draws them."""

from io import StringIO

from rich.console import Console

from gentool.progress import PlainReporter, RichReporter


def test_rich_reporter_reads_running_means_lazily():
    console = Console(file=StringIO(), force_terminal=True, width=120)
    reporter = RichReporter(console)
    calls = []

    def running():
        calls.append(1)
        return {"loss": 1.5}

    reporter.start(total_epochs=2, first_epoch=1)
    reporter.epoch_start(1, steps=100)
    for done in range(1, 101):
        reporter.step(done, running, 1000.0)
    reporter.epoch_end({"epoch": 1, "step": 100, "seconds": 0.1, "images_per_second": 1000.0, "loss": 1.5})
    reporter.close()
    assert 1 <= len(calls) < 100  # throttled: drawn at the first and the last step, not at every one
    assert "epoch 1/2" in console.file.getvalue() and "loss=1.5" in console.file.getvalue()


def test_bar_keeps_step_count_and_etas_at_80_columns():
    console = Console(file=StringIO(), force_terminal=True, width=80)
    reporter = RichReporter(console)
    reporter.start(total_epochs=400, first_epoch=3)
    reporter.epoch_start(3, steps=938)
    means = {"critic_loss": -0.01234, "emd": 0.01234, "g_loss": 0.004567}
    for done in range(1, 501):
        reporter._drawn = float("-inf")  # draw every step (the bar is redrawn at most 5 times a second)
        reporter.step(done, lambda: means, 95.0)
    table = reporter.progress.make_tasks_table(reporter.progress.tasks)
    reporter.close()
    plain = Console(file=StringIO(), width=80, color_system=None)
    plain.print(table)
    line = plain.file.getvalue().rstrip("\n")
    assert len(line) <= 80 and "\n" not in line
    assert "epoch 3/400" in line and "500/938" in line and "eta " in line and " run " in line
    assert "critic=-0.0123" in line and "emd=0.0123" in line and "g=0.00457" in line, line  # every value shows


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def plain_reporter(monkeypatch):
    """A PlainReporter printing a line every 30 s of a fake clock, with that clock and its stream."""
    from gentool.progress import PlainReporter

    clock = FakeClock()
    monkeypatch.setattr(PlainReporter, "clock", staticmethod(clock))
    stream = StringIO()
    return PlainReporter(stream, every=30), clock, stream


def test_plain_lines_at_a_steady_interval_with_the_run_eta(monkeypatch):
    reporter, clock, stream = plain_reporter(monkeypatch)
    reporter.start(total_epochs=2, first_epoch=1)
    reporter.epoch_start(1, steps=100)
    for done in range(1, 101):  # one step a second: lines at 30, 60 and 90 s, then the epoch's line
        clock.now += 1.0
        reporter.step(done, lambda: {"loss": 2.0}, 64.0)
    reporter.epoch_end({"epoch": 1, "step": 100, "seconds": 100.0, "images_per_second": 64.0, "loss": 2.0})
    lines = stream.getvalue().splitlines()
    assert [l.split(" img/s")[0] for l in lines[:3]] == [f"epoch 1/2 step {k}/100 64" for k in (30, 60, 90)]
    assert lines[0].endswith("loss=2 | run eta 0:02:50")  # 170 steps left at a step a second
    assert lines[3].startswith("epoch 1/2 done at step 100 in 100.0s") and lines[3].endswith("run eta 0:01:40")


def test_the_run_eta_is_at_most_the_time_budget_left(monkeypatch):
    reporter, clock, stream = plain_reporter(monkeypatch)
    reporter.start(total_epochs=10, first_epoch=1, budget=120)  # --max-minutes 2 ends it long before 10 epochs
    reporter.epoch_start(1, steps=100)
    for done in range(1, 32):
        clock.now += 1.0
        reporter.step(done, lambda: {"loss": 2.0}, 64.0)
    assert stream.getvalue().splitlines()[0].endswith("run eta 0:01:30")  # not the 969 s the epochs would take


def test_the_run_eta_leaves_out_the_slow_first_step_and_rounds_days_to_hours(monkeypatch):
    """A long run's first step (allocation, kernel choice) took a minute and the rest a second each: the ETA after
    a few steps is the steady pace's, not one swollen by the first step; beyond a day it is shown in hours."""
    reporter, clock, stream = plain_reporter(monkeypatch)
    reporter.start(total_epochs=2, first_epoch=1)
    reporter.epoch_start(1, steps=100)
    clock.now += 60.0
    reporter.step(1, lambda: {"loss": 2.0}, 1.0)
    assert reporter.run_eta() is None  # no pace yet
    for done in range(2, 6):
        clock.now += 1.0
        reporter.step(done, lambda: {"loss": 2.0}, 64.0)
    assert reporter.run_eta() == 195.0  # 195 steps left at a step a second (the first step's minute left out)
    from gentool.progress import format_duration
    assert format_duration(5 * 86400 + 12 * 3600 + 59) == "5d 12h" and format_duration(3723) == "1:02:03"


def test_every_long_pass_shows_its_lines_at_the_pace_of_train_s(monkeypatch):
    """Without a terminal an extractor's hundreds of short epochs (a small folder's: a thousand) printed a line
    each; now every long pass (an extractor's epochs, decoding, drawing samples or couplings) shows at most a line
    every --log-every seconds, and its last one."""
    import dataclasses

    import torch

    from gentool.datatypes import Geometry, ImageData
    from gentool.folder_cache import Progress
    from gentool.metrics import extractor as ex

    class Ticking(FakeClock):
        def __call__(self):  # a second passes at each reading
            self.now += 1.0
            return self.now

    monkeypatch.setattr(PlainReporter, "clock", staticmethod(Ticking()))
    stream = StringIO()
    reporter = PlainReporter(stream, every=30)
    geometry = Geometry(1, 8, 8)
    data = ImageData("tiny", torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.full((8,), -1), geometry, [])
    recipe = dataclasses.replace(ex.GREY_RECIPE, widths=(2,), feature_dim=4, epochs=90, min_steps=0, batch_size=8,
                                 task=ex.ROTATION)
    ex._fit(ex.FeatureNet(recipe, geometry, ex.TURNS), data, recipe, torch.device("cpu"), reporter)
    ends = [line for line in stream.getvalue().splitlines() if " done at step " in line]
    assert 2 <= len(ends) <= 90 // 10 and ends[-1].startswith("epoch 90/90 done"), ends
    lines = len(stream.getvalue().splitlines())
    decoding = Progress(reporter, "decoding 1,000 images", 1000)
    for done in range(1, 1001):
        decoding.tick(done)
    assert len(stream.getvalue().splitlines()) - lines == 999 // 30  # a line every 30 readings; the end has its own
