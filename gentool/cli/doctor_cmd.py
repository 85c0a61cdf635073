"""gentool doctor."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gentool.cli import options as o
from gentool.checks import number_parser
from gentool.train_options import THREADS


@o.cli_errors
def doctor(
    threads: Annotated[Optional[int], typer.Option("--threads", metavar="N", parser=number_parser(int, THREADS), callback=o.checked(THREADS), help="The thread count to decide --precision auto for (default: the cores this process may use), as train's --threads: 1 to 4,096.")] = None,
    clear_precision: Annotated[bool, typer.Option("--clear-precision", help="Forget the cached --precision auto measurements first, so the next decision probes again.")] = False,
    json_out: o.JsonOpt = False,
):
    """Check this machine for gentool: torch and torchvision versions (and whether they pair), the device --device
    auto picks, the CPU's bf16 support, what --precision auto decides and why (with the cached measurements and
    when they expire, or $GENTOOL_AUTO_PRECISION when it forces the decision), and whether other work is loading
    the machine now."""
    from gentool.doctor import diagnose
    from gentool.precision import AUTO_ENV

    found = diagnose(threads, clear_precision)
    if json_out:
        o.print_json(found)
        return
    say = o.out_console().print
    say(f"gentool {found['gentool']}, torch {found['torch']}, torchvision {found['torchvision']}", highlight=False)
    if found["torchvision_problem"]:
        say(f"[bold red]problem:[/] {o.escape(found['torchvision_problem'])}", highlight=False)
    quota = f" (a CPU quota allows {found['cpu_quota']})" if found["cpu_quota"] else ""
    say(f"device (auto): {found['device']}; CPU: {found['cpu']}, {found['cores']} cores{quota}, {found['threads']} "
        f"thread{'s' if found['threads'] != 1 else ''}", highlight=False)
    say(f"bf16: {'native' if found['bf16_native'] else 'not native'}; rule: {found['bf16_rule'] or 'none'} "
        f"({found['bf16_rule_reason']})", highlight=False)
    p = found["precision"]
    say(f"precision auto: {p['used']} ({p['reason']})", highlight=False)
    if found["precision_forced"]:
        say(f"  {AUTO_ENV} is set: unset it to let the CPU's rule and the probe decide", highlight=False)
    if found["precision_cache_cleared"] is not None:
        there = found["precision_cache_found"]  # what stood at the path: said as it was, not as "no cache"
        say(f"precision cache {'cleared' if there else 'was empty'}: {o.escape(found['precision_cache'])}"
            + (f" was {o.escape(there)}" if there else " (nothing there)"), highlight=False)
    for e in found["precision_cache_entries"]:
        say(f"  cached: {e['threads']} threads, fp32 {e['fp32_ms']} ms, bf16 {e['bf16_ms']} ms, "
            f"{e['age_days']} days old (expires in {e['expires_in_days']}) — {found['precision_cache']}",
            highlight=False)
    load = found["load_average"]
    say(f"load average: {' '.join(f'{v:.2f}' for v in load) if load else 'unknown'}"
        + (f" — {found['load_warning']}" if found["load_warning"] else ""), highlight=False)
    if found["precision_cache_entries"] and not clear_precision:  # not to a user who has just run that
        say("clear the cached measurements with: gentool doctor --clear-precision", highlight=False)
