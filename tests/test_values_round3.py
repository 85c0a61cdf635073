"""Issue 26, the attacker hour's remaining classes, each on several instances across the commands: numbers are read
in ASCII digits only; an option given twice takes its last value and a message names that one; numeric options say
their range; control characters a user's text holds never reach the terminal raw; every environment variable is
named when its value cannot be used; a settings file's dotted-key check looks at keys only; a run another process
is starting is said to be in use, not to lack its config.json or checkpoint.

In-process through the console script's entry point (`entry_point`: main(), where click's errors become one line),
so these take a fraction of a second each."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gentool.errors import UsageError, bad_value
from test_locks import holder

MISSING = "no-such.safetensors"
NEW_RUN = ["vae", "--data", "mnist-sample"]


def one_line(result, code: int, *needles: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# 1. Numbers from the user's text: ASCII digits only, wherever they are parsed (click's options, --grid, value lists,
# --param/--sampler values, torchrun's variables: the last ones in test_hostile_values).
@pytest.mark.parametrize("args, option", [
    (["sample", MISSING, "--grid", "١x٢"], "--grid"),  # Arabic-Indic digits
    (["sample", MISSING, "--grid", "８x８"], "--grid"),  # full-width
    (["sample", MISSING, "--n", "1_000"], "--n"),  # Python's underscores
    (["train", *NEW_RUN, "--epochs", "١٠", "--print-config"], "--epochs"),
    (["train", *NEW_RUN, "--epochs", "1_0", "--print-config"], "--epochs"),
    (["train", *NEW_RUN, "--lr", "１e-3", "--print-config"], "--lr"),
    (["train", *NEW_RUN, "--log-every", "٣", "--print-config"], "--log-every"),
    (["train", *NEW_RUN, "--param", "kl_weight=٢", "--print-config"], "--param"),
    (["train", *NEW_RUN, "--sampler", "steps=1_6", "--print-config"], "--sampler"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,٥", "--print-config"], "--latent-dim"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,4", "--lr", "0.1,1_0", "--print-config"], "--lr"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,4", "--trial", "٣", "--print-config"], "--trial"),
    (["summary", "vae", "--latent-dim", "٤"], "--latent-dim"),
    (["doctor", "--threads", "٤"], "--threads"),
    (["evaluate", MISSING, "--level", "٠.9"], "--level"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_numbers_are_read_in_ascii_digits_only(tmp_path, entry_point, args, option):
    line = one_line(entry_point(*args, cwd=tmp_path), 2, option)
    assert "0-9" in line


def test_ascii_numbers_are_taken_as_before(tmp_path, entry_point):
    result = entry_point("train", *NEW_RUN, "--epochs", " 012 ", "--lr", "2e-4", "--log-every", "0.5",
                         "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epochs = 12" in result.stdout and "lr = 0.0002" in result.stdout


# 2. An option given twice: the last value counts (click's rule, and --param's names alike), and a refused value
# is named as given last, never the first one.
@pytest.mark.parametrize("args, shown, hidden", [
    (["--epochs", "1", "--epochs", "x"], "'x'", "'1'"),
    (["--epochs=3", "--epochs=-2"], "-2", "'3'"),
    (["--device", "cpu", "--device", "cpu:abc"], "'cpu:abc'", "got 'cpu'"),
    (["--seed", "1", "--seed", "١"], "'١'", "'1'"),
])
def test_a_refused_repeated_option_names_the_value_given_last(tmp_path, entry_point, args, shown, hidden):
    line = one_line(entry_point("train", *NEW_RUN, *args, "--print-config", cwd=tmp_path), 2, args[0].split("=")[0],
                    shown)
    assert hidden not in line and "unable to parse" not in line


@pytest.mark.parametrize("command, args, key, value", [
    ("train", ["--epochs", "1", "--epochs", "3"], "epochs", 3),
    ("train", ["--param", "kl_weight=0.5", "--param", "kl_weight=2"], "params", {"kl_weight": 2}),
    ("sweep", ["--latent-dim", "2,4", "--param", "kl_weight=1,2", "--param", "kl_weight=3"], "params",
     {"kl_weight": [3]}),
])
def test_a_repeated_option_takes_its_last_value(tmp_path, entry_point, command, args, key, value):
    import tomllib

    result = entry_point(command, *NEW_RUN, *args, "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)[key] == value


# 3. Numeric options say the range they accept.
@pytest.mark.parametrize("args, option, bound", [
    (["train", *NEW_RUN, "--threads", "100000"], "--threads", "4,096"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,4", "--threads", "0"], "--threads", "4,096"),
    (["doctor", "--threads", "100000"], "--threads", "4,096"),
    (["distill", MISSING, "--threads", "5000"], "--threads", "4,096"),
    (["train", *NEW_RUN, "--batch-size", "0"], "--batch-size", "65,536"),
    (["train", *NEW_RUN, "--epochs", "0"], "--epochs", "1,000,000,000"),
    (["train", *NEW_RUN, "--limit", "0"], "--limit", "1,000,000,000"),
    (["train", *NEW_RUN, "--checkpoint-every", "-1"], "--checkpoint-every", "1,000,000,000"),
    (["train", *NEW_RUN, "--max-minutes", "0"], "--max-minutes", "10,000,000"),
    (["train", *NEW_RUN, "--checkpoint-minutes", "-1"], "--checkpoint-minutes", "10,000,000"),
    (["train", *NEW_RUN, "--log-every", "-1"], "--log-every", "1,000,000"),
    (["train", *NEW_RUN, "--image-size", "0"], "--image-size", "4,096"),
    (["sample", MISSING, "--n", "0"], "--n", "1,000,000"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,4", "--workers", "0"], "--workers", "1,024"),
    (["sweep", *NEW_RUN, "--latent-dim", "2,4", "--seeds", "0"], "--seeds", "10,000"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("--") else None)
def test_numeric_options_say_their_range(tmp_path, entry_point, args, option, bound):
    stop = ["--print-config"] if args[0] in ("train", "sweep") else []  # train and sweep: checked, then printed
    one_line(entry_point(*args, *stop, cwd=tmp_path), 2, option, bound)


def test_every_declared_number_check_states_its_upper_bound():
    """Each Ints/Numbers check of every command's options (the dataclasses) words its range, its upper bound in it."""
    import dataclasses

    from gentool.checks import Ints, Numbers, _shown
    from gentool.distill_options import DistillOptions
    from gentool.evaluate_options import EvalOptions
    from gentool.export_options import ExportOptions
    from gentool.prepare_options import PrepareOptions
    from gentool.sample_options import SampleOptions
    from gentool.sweep_options import SweepOptions
    from gentool.train_options import TrainOptions

    checks = [(cls.__name__, f.name, f.metadata.get("check")) for cls in (
        TrainOptions, SweepOptions, SampleOptions, EvalOptions, DistillOptions, PrepareOptions, ExportOptions)
        for f in dataclasses.fields(cls)]
    numbers = [(c, n, check) for c, n, check in checks if isinstance(check, (Ints, Numbers))]
    assert len(numbers) > 20
    for cls, name, check in numbers:
        high = f"{check.high:,}" if isinstance(check, Ints) else _shown(check.high)
        assert high in check.accepted(), (cls, name, check.accepted())


# 4. Control characters in what a message echoes (a file's key, a path, a variable) are written as escapes.
@pytest.mark.parametrize("text, shown", [
    ("kl\0weight", "kl\\x00weight"), ("a\x1b[2Jb", "a\\x1b[2Jb"), ("one\ntwo\r", "one\\x0atwo\\x0d"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"), ("\u2066x\u2069", "\\u2066x\\u2069"), ("bytes\udcff", "bytes\\udcff"),
    ("plain é ü ١ [x]", "plain é ü ١ [x]"),
])
def test_printable_escapes_what_would_reach_the_terminal_raw(text, shown):
    from gentool.errors import printable

    assert printable(text) == shown
    assert bad_value(f"--param {text}", 1, "x").args[0].startswith(f"--param {shown}: got 1")


def test_a_message_shows_a_hostile_value_bounded():
    message = str(bad_value("GENTOOL_AUTO_PRECISION", "x" * 1_000_000, "fp32 or bf16"))
    assert len(message) < 1200 and "1,000,002 characters" in message


@pytest.mark.parametrize("make_args", [
    lambda d: ["train", "--config", _toml(d, '[params]\n"kl\\u0000weight" = 1\n'), "--print-config"],
    lambda d: ["train", "--config", _toml(d, 'model = "vae"\ndata = "mnist-sample"\ndata_dir = "a\\u001b[31mb\\u0000"\n'),
               "--print-config"],
    lambda d: ["sample", str(d / "no\x1b]0;title\x07such\nfile.safetensors")],
    lambda d: ["report", str(d / "fake\u202egpj.html")],
    lambda d: ["summary", str(d / "[bold]x\x1b[2J.safetensors")],
    lambda d: ["evaluate", str(d / "a\rb.safetensors"), "--data", "mnist-sample"],
], ids=["toml-key", "toml-path", "sample-path", "report-bidi", "summary-markup", "evaluate-cr"])
def test_messages_escape_control_characters_everywhere(tmp_path, entry_point, make_args):
    result = entry_point(*make_args(tmp_path), cwd=tmp_path)
    line = one_line(result, 2)
    raw = [c for c in result.stderr.rstrip("\n") if ord(c) < 32 or c in "\u202e\u2066\u2069"]
    assert not raw, (raw, line)
    assert "\\x" in line or "\\u202e" in line or "[bold]" in line


def _toml(folder: Path, text: str) -> str:
    path = folder / "settings.toml"
    path.write_text(text)
    return str(path)


# 5. Environment variables: named, with what is accepted, exit 2.
@pytest.mark.parametrize("name, value, args", [
    ("GENTOOL_RUNS", "r" * 5000, ["train", *NEW_RUN, "--epochs", "1", "--limit", "16"]),
    ("GENTOOL_RUNS", "runs/" + "r" * 300, ["train", *NEW_RUN, "--epochs", "1", "--limit", "16"]),
    ("GENTOOL_SWEEPS", "s" * 5000, ["sweep", *NEW_RUN, "--latent-dim", "2,4", "--list"]),
    ("GENTOOL_SWEEPS", "/tmp/" + "s" * 256 + "/x", ["sweep", *NEW_RUN, "--latent-dim", "2,4", "--list"]),
], ids=["runs-long", "runs-name", "sweeps-long", "sweeps-name"])
def test_a_variable_no_folder_can_be_is_named(tmp_path, entry_point, monkeypatch, name, value, args):
    monkeypatch.setenv(name, value)
    one_line(entry_point(*args, cwd=tmp_path), 2, name, "255 bytes")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("env, name", [
    ({"GENTOOL_DATA": "d" * 5000}, "GENTOOL_DATA"), ({"GENTOOL_DATA": "d" * 256}, "GENTOOL_DATA"),
    ({"XDG_CACHE_HOME": "c" * 5000}, "XDG_CACHE_HOME"), ({"XDG_CACHE_HOME": "/tmp/" + "c" * 400}, "XDG_CACHE_HOME"),
    ({"XDG_CACHE_HOME": "", "HOME": "/" + "h" * 300}, "HOME"),
], ids=["data-long", "data-name", "cache-long", "cache-name", "home"])
def test_the_data_and_cache_variables_are_named(monkeypatch, env, name):
    from gentool.data import data_root

    monkeypatch.delenv("GENTOOL_DATA", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError, match=f"^{name}: got .*255 bytes"):
        data_root(None)


def test_prepare_names_gentool_data(tmp_path, entry_point, monkeypatch):
    """The instance the attacker found: exit 1 and "error: ddd…", now the variable's name and exit 2."""
    monkeypatch.setenv("GENTOOL_DATA", "d" * 5000)
    one_line(entry_point("prepare", "--data", "mnist", cwd=tmp_path), 2, "GENTOOL_DATA", "4,096 characters")


def test_display_and_compiler_variables(monkeypatch):
    from gentool.environment import columns

    for bad in ("١٢", "0", "1_0", "9" * 12, "abc"):  # rich would take '١٢' as 12 columns
        assert columns({"COLUMNS": bad}).startswith("COLUMNS: got ")
    assert columns({"COLUMNS": "120"}) is None and columns({}) is None
    import torch

    from gentool.device import compiler_problem

    monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
    assert "CXX='no-such-compiler-anywhere' is not a program found on PATH" in compiler_problem(torch.device("cpu"))


def test_torchrun_address_is_bounded():
    from gentool.distributed import world_from_env

    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "29500"}
    for addr in ("h" * 300, "hôte", " "):
        with pytest.raises(UsageError, match="^MASTER_ADDR"):
            world_from_env({**env, "MASTER_ADDR": addr})


def test_one_process_with_another_rank_or_no_process_is_refused():
    """Attacker hour h26u (borderline): WORLD_SIZE=1 with RANK=5 ran as a single process without a word."""
    from gentool.distributed import SINGLE, world_from_env

    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is SINGLE and world_from_env({}) is SINGLE
    with pytest.raises(UsageError, match="^RANK: got '5'; expected an integer from 0 to 0"):
        world_from_env({"WORLD_SIZE": "1", "RANK": "5"})
    with pytest.raises(UsageError, match="^WORLD_SIZE: got '0'"):
        world_from_env({"WORLD_SIZE": "0"})
    # h26v: the local pair beside one process, unchecked; and WORLD_SIZE=-1 said "from 0", where 0 is refused
    for env, said in [({"LOCAL_RANK": "abc"}, "^LOCAL_RANK: got 'abc'"),
                      ({"LOCAL_WORLD_SIZE": "0"}, "^LOCAL_WORLD_SIZE"),
                      ({"WORLD_SIZE": "1", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}, "^LOCAL_WORLD_SIZE: got '4'"),
                      ({"WORLD_SIZE": "-1"}, "^WORLD_SIZE: got '-1'; expected an integer from 1 to")]:
        with pytest.raises(UsageError, match=said):
            world_from_env(env)


# 6. The dotted-key check of a settings file looks at keys, not at strings or comments.
DOTTED = ".".join(["a"] * 20)


@pytest.mark.parametrize("text, refused", [
    (f"[params]\n{DOTTED} = 1\n", True),
    (f"[{DOTTED}]\nx = 1\n", True),
    (f"[[{DOTTED}]]\n", True),
    (f'"q".{DOTTED} = 1\n', True),
    (f"x = {{b = 1, {DOTTED} = 2}}\n", True),
    (f'out = "runs/{DOTTED}"\n', False),
    (f"data = 'a.b = c.{DOTTED}'\n", False),
    (f"# {DOTTED} = 1\nx = 1\n", False),
    (f'x = """\n{DOTTED} = 1\n"""\n', False),
    (f"x = '''\n{DOTTED} = 1\n'''\n", False),
    (f'x = "a\\" {DOTTED} = 1"\n', False),
    (f'"{DOTTED}" = 1\n', False),  # one quoted key
    ("x = [" + ", ".join(["1.5"] * 40) + "]\n", False),
])
def test_the_dotted_key_check_looks_at_keys_only(text, refused):
    from gentool.config_file import too_dotted

    assert too_dotted(text) is refused


def test_the_dotted_key_check_is_linear_on_unterminated_strings():
    from gentool.config_file import too_dotted

    start = time.perf_counter()  # a scan going back over each unterminated string would take minutes here
    for text in ('"""' * 100_000, "'''" * 100_000, '"\\' * 100_000, "'" * 200_000):
        assert too_dotted(text) is False
    assert time.perf_counter() - start < 15


def test_a_settings_file_with_a_dotted_value_is_read(tmp_path, entry_point):
    path = _toml(tmp_path, f'model = "vae"\ndata = "mnist-sample"\nout = "runs/{DOTTED}"\n# {DOTTED} = 1\n')
    result = entry_point("train", "--config", path, "--print-config", cwd=tmp_path)
    assert result.returncode == 0 and DOTTED in result.stdout, result.stderr


# 7. A run another process is starting (its lock held, no config.json or checkpoint yet) is said to be in use.
@pytest.fixture()
def starting(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    proc = holder(run / ".gentool.lock")
    yield run
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("args, code, needles", [
    (["train", "--resume", "{run}", "--epochs", "2"], 1, ["--resume", "in use by process"]),
    (["train", "--resume", "auto", "--out", "{run}", "--epochs", "2"], 1, ["in use by process"]),
    (["distill", "--resume", "{run}"], 1, ["--resume", "in use by process"]),
    (["distill", "{run}"], 1, ["RUN", "in use by process"]),
    (["sample", "{run}/last.safetensors"], 2, ["does not exist yet", "being written by process"]),
    (["evaluate", "{run}/last.safetensors", "--data", "mnist-sample"], 2, ["being written by process"]),
    (["summary", "{run}"], 1, ["TARGET", "in use by process"]),
    (["report", "{run}"], 1, ["PATH", "in use by process"]),
], ids=["train", "train-auto", "distill-resume", "distill-teacher", "sample", "evaluate", "summary", "report"])
def test_a_run_being_started_is_in_use(tmp_path, entry_point, starting, args, code, needles):
    result = entry_point(*[a.format(run=starting) for a in args], cwd=tmp_path)
    one_line(result, code, *needles)
    assert sorted(p.name for p in starting.iterdir()) == [".gentool.lock", ".gentool.lock.owner", "samples"]


def test_sample_of_a_checkpoint_not_there_makes_no_folder(tmp_path, entry_point):
    """Found walking item 7: the output beside a missing checkpoint had its folder made before the checkpoint was
    looked at, so `sample DIR/last.safetensors` left an empty DIR behind."""
    one_line(entry_point("sample", "nodir/last.safetensors", cwd=tmp_path), 2, "CKPT", "does not exist")
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("args", [("export", "nodir/last.safetensors"),
                                  ("evaluate", "nodir/x.safetensors", "--out", "nodir2/e.json")])
def test_other_commands_on_an_input_not_there_make_no_folder(tmp_path, entry_point, args):
    """The class of the test above: export writes beside the checkpoint, evaluate to --out."""
    one_line(entry_point(*args, cwd=tmp_path), 2, "does not exist")
    assert not (tmp_path / "nodir").exists() and not (tmp_path / "nodir2").exists()


def test_an_omp_num_threads_openmp_cannot_read_is_warned_about(tmp_path, entry_point, monkeypatch):
    """Attacker hour h26x, F8: OMP_NUM_THREADS of '٢', '-1', 'abc', '' or 99999999999 were dropped by the OpenMP
    runtime without a word (a batch script's typo then ran on every core). A warning now names it; OpenMP's own
    list syntax ('4,2') and plain counts pass."""
    from gentool.environment import omp_threads

    for bad in ("٢", "-1", "abc", "", "99999999999", "0", "4,,2", " 2"):
        assert omp_threads({"OMP_NUM_THREADS": bad}).startswith("OMP_NUM_THREADS: got "), bad
    assert all(omp_threads({"OMP_NUM_THREADS": good}) is None for good in ("1", "4,2", "4096"))
    assert omp_threads({}) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    done = entry_point("models", "--json", cwd=tmp_path)
    assert done.returncode == 0 and "OMP_NUM_THREADS: got 'abc'" in done.stderr, done.stderr
