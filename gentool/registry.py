"""Model registry: built-ins register with a decorator; plugins join through the `gentool.models` entry points.

Entry points are loaded lazily (the first time a name is not found among the built-ins, or when all models are
listed) and only once. A plugin that fails to import is reported with a warning naming its distribution; it never
takes the tool down. `load_entry_points` is that loading for any group: training hooks (`gentool.hooks`, see
gentool.hooks) load through it too. `describe_models` lists every model without importing any (models import torch): it reads
the `@register_model("name")` classes and their docstrings from the modules' source text.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import re
import sys
import types
import warnings
from dataclasses import dataclass

from gentool import declared
from gentool.errors import GentoolError, UsageError, did_you_mean
from gentool.installed import entry_points  # importlib.metadata's, never blocked by a pipe there
from gentool.plugin_exits import PluginEnded, no_exit
from gentool.stops import said_if_slow

ENTRY_POINT_GROUP = "gentool.models"
# Each module registers its family with the decorator, exactly as a plugin package does.
BUILTIN_MODULES = ("gentool.models.vae", "gentool.models.gan", "gentool.models.wgan", "gentool.models.wgan_gp",
                   "gentool.models.sngan", "gentool.models.cgan", "gentool.models.cvae", "gentool.models.flow",
                   "gentool.models.ddpm", "gentool.models.mlp_gan", "gentool.models.reflow")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model class and where it came from ("built-in" or the plugin's distribution name)."""

    name: str
    cls: type
    source: str

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def sampler_settings(self) -> list[dict]:
        """The family's declared sampler settings (name, default, choices or range, help), for `gentool models`."""
        out = []
        for o in getattr(self.cls, "sample_options", ()):  # a class that is not a GenerativeModel declares none
            bounds = {"choices": list(o.choices)} if o.choices else {"low": o.low, "high": o.high}
            out.append({"name": o.name, "default": o.default, **bounds, "help": o.help})
        return out


_registry: dict[str, ModelEntry] = {}
_builtins_loaded = False
_plugins_loaded = False
_current_source = "built-in"
_failed: dict[str, str] = {}  # model entry point name → the distribution whose plugin failed to load
_ignored: list[str] = []  # plugin models register_model refused (a name taken or not allowed), in words
_in_use: list[ModelEntry] = []  # plugin models looked up in this process: what an unexpected error is laid at
_watch = None  # told each step that runs a plugin's code, then None when it ends (gentool.plugin_check's timer)


# A model's name becomes part of its run folder's name (runs/NAME-DATA-TIME) and of every line that names it: a
# plugin's "../../evil\x1b[31m" put a run outside runs/ and an escape sequence in the terminal.
NAME_RULE = "a model's name is 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"


def valid_name(name) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name, re.ASCII) is not None


def register_model(name: str):
    """Class decorator that registers a model class under `name` (lower-case, unique)."""

    def decorator(cls: type) -> type:
        key = name.lower()
        why = None
        if not valid_name(key):
            why = NAME_RULE
        elif (existing := _registry.get(key)) is not None and existing.cls is not cls:
            why = f"already provided by {existing.source}"
        if why:  # warned, and `models --check` fails for it (an ignored model is a plugin that does not load)
            warnings.warn(f"gentool: model {name!r} from {_current_source} ignored: {why}")
            _ignored.append(f"{_current_source!r} (model {name!r} ignored: {why})")
            return cls
        cls.name = key
        # A built-in module may first be imported by a plugin's import (a hooks entry point importing its package,
        # which subclasses GAN): it is still built-in, not the plugin's.
        source = "built-in" if cls.__module__ in BUILTIN_MODULES else _current_source
        _registry[key] = ModelEntry(key, cls, source)
        return cls

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name, dist in load_entry_points(ENTRY_POINT_GROUP, _register_loaded):
        _failed[name.lower()] = dist  # only a model's: a hook plugin's name is no model's (it was: "failed to load")


def _register_loaded(name: str, dist: str, loaded) -> None:
    # An entry point may name the class itself instead of a module whose import registers it; anything else is a
    # mistake the plugin's warning names (it was ignored, and the model then "unknown" with no word of the plugin).
    if isinstance(loaded, type) and name.lower() not in _registry:
        register_model(name)(loaded)
    elif not isinstance(loaded, (type, types.ModuleType)):
        raise TypeError(f"it names {type(loaded).__name__} {loaded!r:.60}; expected a module that registers models "
                        f"or a model class")


def dist_name(ep) -> str:
    return ep.dist.name if ep.dist is not None else ep.value.split(":")[0]


def entry_text(dist: str, name: str) -> str:
    """A plugin as every message names it: its distribution and its entry point."""
    return f"{dist!r} (entry point {name!r})"


class Failures:
    """The warnings of one pass over a group's entry points: the first SHOWN failures of each distribution in full,
    then one line per distribution counting the rest. (A package declaring thousands of broken entry points was a
    warning each: minutes of output; gentool.installed bounds how many are tried.)"""

    SHOWN = 3

    def __init__(self):
        self.counts: dict[str, int] = {}

    def warn(self, dist: str, text: str) -> None:
        self.counts[dist] = self.counts.get(dist, 0) + 1
        if self.counts[dist] <= self.SHOWN:
            warnings.warn(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        for dist, n in self.counts.items():
            if n > self.SHOWN:
                warnings.warn(f"gentool: plugin {dist!r}: {n - self.SHOWN:,} more of its entry points failed too "
                              f"(not each shown)")


def load_entry_points(group: str, use, kind: str = "plugin") -> list[tuple[str, str]]:
    """Load each entry point of `group` and pass its name, its distribution's name and the loaded object to
    `use(name, dist, obj)`; return (name, distribution) of each that failed. One that fails to load (or to be used)
    is a one-line warning naming its distribution (a `kind`: "plugin", "hook plugin") and is skipped: a broken
    plugin never takes gentool down. One that tries to end the process (os._exit,
    sys.exit) stops the command in one line naming it instead (PluginEnded), never silently. What a plugin
    prints while it loads goes to stderr: stdout carries `--json` results. Models (`gentool.models`) and hooks
    (`gentool.hooks`) load through here."""
    global _current_source
    failed = []
    with Failures() as failures:
        for ep in entry_points(group=group):
            dist = dist_name(ep)
            _current_source = dist  # what @register_model records for the models the import registers
            try:
                with watched(f"the import of {kind} {entry_text(dist, ep.name)}"):
                    use(ep.name, dist, ep.load())
            except PluginEnded:  # it tried to end the process: that ends the command, in one line naming it
                raise
            except Exception as exc:  # a broken plugin must not break gentool
                what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                failed.append((ep.name, dist))
                failures.warn(dist, f"gentool: {kind} {entry_text(dist, ep.name)} failed to load: {what}")
            finally:
                _current_source = "built-in"
    return failed


def watch_plugins(watch) -> None:
    """Have `watch(step)` called as each step that runs a plugin's code starts (the step, in words) and ends (None):
    gentool.plugin_check times them."""
    global _watch
    _watch = watch


@contextlib.contextmanager
def watched(step: str | None):
    """Run a step that runs a plugin's code (its import, a hook plugin's factory, reading its model class): tell the
    watcher, if any, that `step` (None: gentool's own work, not told) starts, then that it ended; without one, say
    on stderr if it is slow. A plugin's step that tries to end the process (os._exit, sys.exit) raises PluginEnded
    (gentool.plugin_exits). What the plugin prints goes to stderr: stdout carries `--json` results."""
    if step is None:
        yield
        return
    if _watch is not None:
        _watch(step)
    try:
        with contextlib.redirect_stdout(sys.stderr), no_exit(step), _slow_notice(step):
            yield
    finally:
        if _watch is not None:
            _watch(None)


NOTICE_SECONDS = 5.0  # a plugin's step still running after this long is said on stderr (issue 26)


def _slow_notice(step: str):
    """One stderr line if `step` is still running after NOTICE_SECONDS: a plugin whose import (or hook factory)
    hangs otherwise hangs `train`, `summary`, … without a word. Without a watcher only: `models --check` has its own
    timeout and says it (and runs each step this says, so the line's advice holds for each)."""
    if _watch is not None:
        return contextlib.nullcontext()
    return said_if_slow(f"gentool: still waiting for {step} after {NOTICE_SECONDS:g} s (Ctrl-C stops; `gentool "
                        f"models --check --import-timeout SECONDS` names a plugin that hangs)", NOTICE_SECONDS)


def get_entry(name: str) -> ModelEntry:
    """Return the registry entry for `name`, loading plugins if needed; unknown names list the valid ones."""
    _load_builtins()
    key = name.lower()
    if key not in _registry:
        _load_plugins()
    if key not in _registry and key in _failed:
        raise UsageError(f"MODEL: {name!r} comes from the plugin {_failed[key]!r}, which failed to load (see the "
                         f"warning above)")
    if key not in _registry:
        raise UsageError(f"MODEL: unknown model {name!r}{did_you_mean(name, _registry)}; registered models: "
                         f"{', '.join(sorted(_registry))}")
    entry = _registry[key]
    if entry.source != "built-in":
        if not _is_model_class(entry.cls):
            raise UsageError(f"MODEL: {name!r} from the plugin {entry.source!r} is {entry.cls!r}, not a gentool model "
                             f"(a subclass of gentool.models.base.GenerativeModel)")
        if entry not in _in_use:
            _in_use.append(entry)
    return entry


def unloaded(infos: list[ModelInfo]) -> list[str]:
    """The model plugins that failed to load in this process, and those of `infos` (`describe_models(load=True)`)
    whose class cannot be read, in words: what `gentool models --check` fails for."""
    return ([entry_text(dist, name) for name, dist in _failed.items()] + list(_ignored)
            + [f"{i.source!r} (model {i.name!r})" for i in infos if i.broken])


def plugin_source(name: str | None) -> str | None:
    """The plugin distribution that provides the loaded model `name` (None: a built-in, or not loaded)."""
    entry = _registry.get((name or "").lower())
    return entry.source if entry is not None and entry.source != "built-in" else None


def plugin_failure(exc: BaseException, source: str | None, model: str | None) -> BaseException:
    """An exception raised while a plugin's model ran, as one GentoolError naming the plugin; gentool's own errors,
    OS errors and anything raised with a built-in model stay as they are."""
    if not source or source == "built-in" or isinstance(exc, (GentoolError, OSError)):
        return exc
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return GentoolError(f"model {model!r} from the plugin {source!r} failed: {what} (GENTOOL_DEBUG=1 shows where)")


def _is_model_class(cls) -> bool:
    """Whether `cls` is a subclass of gentool.models.base.GenerativeModel (by its MRO: this module imports no model
    module, which would make an import circle through gentool.models.base)."""
    return isinstance(cls, type) and any(f"{c.__module__}.{c.__qualname__}" == "gentool.models.base.GenerativeModel"
                                         for c in cls.__mro__)


def forget_in_use() -> None:
    """A new command starts: no plugin model is in use yet (in-process callers run several, one after another)."""
    _in_use.clear()


def plugin_in_use_failure(exc: BaseException) -> BaseException:
    """`exc`, raised while this process used a plugin's model (outside training, which names its own: sampling,
    evaluating, exporting, summarising it), as one GentoolError naming the plugin last looked up; else `exc`."""
    return plugin_failure(exc, _in_use[-1].source, _in_use[-1].name) if _in_use else exc


def get_model(name: str) -> type:
    """Return the model class registered under `name`."""
    return get_entry(name).cls


def list_models() -> list[ModelEntry]:
    """Every registered model, built-ins and plugins, sorted by name."""
    _load_builtins()
    _load_plugins()
    return [_registry[k] for k in sorted(_registry)]


@dataclass(frozen=True)
class ModelInfo:
    """What `gentool models` shows of a model: its name, where it comes from, the first line of its docstring and,
    once the model is imported, its sampler's settings (None: not imported); `broken`: imported, but its class
    cannot be read."""

    name: str
    source: str
    description: str
    sampler_settings: tuple | None = None
    broken: bool = False


def describe_models(load: bool = False, settings: bool = False) -> list[ModelInfo]:
    """Every model, built-ins and plugins, sorted by name, read from source without importing it (with `settings`,
    also the sampler settings each declares, where its source says: gentool.declared); `load` imports them instead
    (a plugin that fails to import then warns, as when it is used)."""
    if load:
        return [_loaded_info(e) for e in list_models()]
    found: dict[str, ModelInfo] = {}
    for module in BUILTIN_MODULES:
        found.update(_declared(module, "built-in", settings=settings))
    with Failures() as failures:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            for name, info in _read_plugin(ep, settings, failures).items():
                found.setdefault(name, info)  # as register_model does: the first provider of a name keeps it
    return [found[k] for k in sorted(found)]


def _read_plugin(ep, settings: bool, failures: Failures) -> dict:
    """The models an entry point's source declares, read without running it ({} when it cannot be read: warned)."""
    dist, here = read_entry(ep, lambda module, attr: _declared(module, dist_name(ep), attr or None, ep.name.lower(),
                                                               settings), failures)
    if here is None:
        return {}
    if not here and valid_name(ep.name.lower()):  # registered in a way only running it shows: named, described
        here = {ep.name.lower(): ModelInfo(ep.name.lower(), dist, dist_summary(ep))}  # by its package
    return here


def read_entry(ep, read, failures: Failures | None, kind: str = "plugin") -> tuple[str, object]:
    """`read(module, attr)` of an entry point's `module:attr`, which reads its source and runs none of it: (its
    distribution, what `read` gave, or None when the source cannot be read: a warning through `failures`, bounded
    per distribution; none when `failures` is None)."""
    dist = dist_name(ep)
    module, _, attr = ep.value.partition(":")
    try:
        return dist, read(module.strip(), attr.strip())
    except (ImportError, OSError, SyntaxError, ValueError, RecursionError) as exc:
        if failures is not None:
            failures.warn(dist, f"gentool: {kind} {entry_text(dist, ep.name)} cannot be read: {exc}")
        return dist, None


def dist_summary(ep) -> str:
    """The one-line summary an entry point's package gives of itself (for one whose source says nothing)."""
    return (ep.dist.metadata.get("Summary") or "") if ep.dist is not None else ""


def _loaded_info(entry: ModelEntry) -> ModelInfo:
    """What `gentool models --check` shows of a loaded model; a plugin's class whose docstring or sample_options
    cannot be read (`sample_options = 5`: was a traceback for the whole listing) is a warning naming it, and
    `broken` (the check fails)."""
    # a plugin's class may run its code here too (a metaclass's properties): watched as its import is
    step = None if entry.source == "built-in" else f"reading model {entry.name!r} of plugin {entry.source!r}"
    try:
        with watched(step):
            return ModelInfo(entry.name, entry.source, entry.description, tuple(entry.sampler_settings()))
    except PluginEnded:
        raise
    except Exception as exc:  # the plugin's class, not gentool, is at fault: the others are listed
        warnings.warn(f"gentool: model {entry.name!r} from {entry.source!r} cannot be described: "
                      f"{type(exc).__name__}: {exc}")
        return ModelInfo(entry.name, entry.source, "", None, broken=True)


def _declared(module: str, source: str, class_name: str | None = None, ep_name: str | None = None,
              settings: bool = False) -> dict:
    """The models a module's source declares: classes decorated with @register_model("name"), and the class an
    entry point names (module:Class) under the entry point's name."""
    tree = declared.parsed(module)
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        doc = (ast.get_docstring(node) or "").strip()
        description = doc.splitlines()[0] if doc else ""
        names = [d.args[0].value for d in node.decorator_list if isinstance(d, ast.Call) and d.args
                 and getattr(d.func, "id", getattr(d.func, "attr", None)) == "register_model"
                 and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)]
        if class_name and node.name == class_name and ep_name:
            names.append(ep_name)
        listed = declared.sampler_settings(module, node.name) if settings and names else None
        for name in names:
            if not valid_name(name.lower()):  # as register_model will refuse it when loaded
                warnings.warn(f"gentool: model {name!r} from {source!r} ignored: {NAME_RULE}")
                continue
            found[name.lower()] = ModelInfo(name.lower(), source, description,
                                            None if listed is None else tuple(listed))
    return found
