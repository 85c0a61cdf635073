"""Issue 26 leftovers, class: every command stopped by SIGINT, SIGTERM or SIGHUP, at any moment, ends with one line on
stderr and exit 128 + the signal (130 "interrupted", 143 "terminated", 129 "hung up"), never a traceback and never
a silent death by the signal. Real signals, sent by the process to itself at exact moments of the real CLI (its
option parsing, each command's body, the interpreter's teardown), and stderr read from a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gentool import stops

# Runs gentool's console-script entry point, sending the signal argv[1] to itself at the moment argv[2] names:
#   parse: while the command line is parsed (Typer turns a KeyboardInterrupt there into 130, silently)
#   body: as the command's own code starts (inside gentool.cli.options.cli_errors)
#   teardown: while the interpreter tears itself down after the command is over
AT_A_MOMENT = """
import contextlib, os, signal, sys
import gentool.cli
from gentool.cli import options

signum, moment = getattr(signal, sys.argv[1]), sys.argv[2]
def send():
    os.kill(os.getpid(), signum)
if moment == "parse":
    check = options.check_value
    options.check_value = lambda *a: (send(), check(*a))
elif moment == "body":
    stdout = options.json_stdout
    options.json_stdout = lambda json_out: (send(), stdout(json_out))[1]
else:
    import builtins, time
    class Late:
        def __del__(self):
            send()
            time.sleep(0.2)
    builtins._late = Late()  # torn down with the builtins, after the signal handlers are gone
sys.argv = ["gentool", *sys.argv[3:]]
gentool.cli.main()
"""

COMMANDS = {
    "report": ["report", "{tmp}/no-run"],
    "summary": ["summary", "vae"],
    "doctor": ["doctor", "--threads", "1"],
    "models": ["models"],
    "sample": ["sample", "{tmp}/no.safetensors"],
    "evaluate": ["evaluate", "{tmp}/no.safetensors", "--data", "mnist-sample"],
    "export": ["export", "{tmp}/no.safetensors", "--format", "onnx"],
    "prepare": ["prepare", "--data", "mnist-sample"],
    "distill": ["distill", "{tmp}/no-run", "--threads", "1"],
    "sweep": ["sweep", "vae", "--list", "--threads", "1"],
    "train": ["train", "vae", "--data", "mnist-sample", "--threads", "1", "--out", "{tmp}/run"],
}
EXPECTED = {"SIGINT": (130, "interrupted"), "SIGTERM": (143, "terminated"), "SIGHUP": (129, "hung up")}


def gentool_at(tmp_path: Path, signame: str, moment: str, args: list[str], nohup: bool = False) -> tuple[int, list[str]]:
    """The command's exit code and stderr lines. SIGHUP starts at its default in the child (`nohup`: ignored), not
    as the suite's own process has it: a suite run under nohup (a batch job's) must not change what is tested."""
    err = tmp_path / "stderr"
    hangup = signal.SIG_IGN if nohup else signal.SIG_DFL
    with open(err, "w") as stderr:
        code = subprocess.run([sys.executable, "-c", AT_A_MOMENT, signame, moment,
                               *(a.format(tmp=tmp_path) for a in args)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120,
                              preexec_fn=lambda: signal.signal(signal.SIGHUP, hangup),
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}).returncode
    return code, [line for line in err.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_closed_terminal_ends_every_command_in_one_line(tmp_path, command):
    assert gentool_at(tmp_path, "SIGHUP", "body", COMMANDS[command]) == (129, ["hung up"])


@pytest.mark.parametrize("signame", sorted(EXPECTED))
def test_a_stop_while_the_command_line_is_parsed_is_one_line_with_its_own_code(tmp_path, signame):
    code, word = EXPECTED[signame]
    assert gentool_at(tmp_path, signame, "parse", COMMANDS["doctor"]) == (code, [word])


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP"])
def test_a_stop_in_the_teardown_after_the_command_is_not_a_silent_death(tmp_path, signame):
    code, lines = gentool_at(tmp_path, signame, "teardown", ["models"])
    assert (code, lines) == (0, [])  # the command was over, its output written: it exits with its own code


def test_a_hangup_ignored_by_nohup_stays_ignored(tmp_path):
    code, lines = gentool_at(tmp_path, "SIGHUP", "body", ["models"], nohup=True)  # ignored when it starts, as nohup does
    assert code == 0 and not any("hung up" in line or "Traceback" in line for line in lines)


def test_each_stop_has_its_word_and_code():
    for signum, (code, word) in [(signal.SIGINT, (130, "interrupted")), (signal.SIGTERM, (143, "terminated")),
                                 (signal.SIGHUP, (129, "hung up"))]:
        exc = stops.stopped(signum)
        assert isinstance(exc, KeyboardInterrupt) and 128 + stops.signum_of(exc) == code
        assert stops.word(signum) == word
    stops.told()
    assert stops.untold() is None
