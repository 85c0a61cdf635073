"""Progress output: the rich bar reads the running means only when it draws them."""

from io import StringIO

from rich.console import Console

from gentool.progress import RichReporter


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
