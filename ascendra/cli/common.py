"""Arguments shared by the simulation subcommands: a setting (S1-S5) and the flags that override it."""

from __future__ import annotations

import argparse

from ascendra.core import default_slo
from ascendra.core.kv_transfer import LINKS
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.settings import SETTINGS, Setting, setting
from ascendra.runtime.slo_rules import SLO_RULES
from ascendra.workload.arrivals import ARRIVAL_KINDS

# Without --setting: conv lengths, Poisson, strict SLOs (the headline); with --trace, a replay of it.
CUSTOM = Setting("custom", "custom scenario", "conv", "poisson")


def add_ascendra_modes(p: argparse.ArgumentParser) -> None:
    """The flags that turn on Ascendra's adaptive parts, the same for serve and simulate."""
    p.add_argument("--adaptive-roles", action="store_true",
                   help="ascendra: roles follow the load: an HP instance serves as LP while the LP pool "
                   "is late beyond its help, and back (--hp-instances is the split at rest) "
                   "(default: a static split)")
    p.add_argument("--migration", metavar="LINK", choices=sorted(LINKS), default=None,
                   help="ascendra: running requests move to another instance with their KV when the "
                   "move pays, the transfer charged at LINK's bandwidth: " + ", ".join(sorted(LINKS))
                   + " (default: only requests that have not started move)")


def add_scenario_args(
    p: argparse.ArgumentParser, *, num_requests: int | None, default_text: str = ""
) -> None:
    """The scenario flags; `default_text` says what --num-requests defaults to when it is None."""
    g = p.add_argument_group("scenario (a --setting, or its parts; a flag given overrides the setting's)")
    g.add_argument(
        "--setting", type=str.upper, choices=list(SETTINGS),
        help=("; ".join(f"{s.name}: {s.title}" for s in SETTINGS.values()).replace("%", "%%")
              + " (default: none: Azure conv lengths, Poisson, strict SLOs, the README's headline)"),
    )
    g.add_argument(
        "--trace", metavar="CSV",
        help="a timestamped trace to replay with its own timing (S1 needs one: the Azure conv trace, "
        "AzureLLMInferenceTrace_conv.csv from github.com/Azure/AzurePublicDataset, or Vidur's "
        "splitwise_conv.csv) (default: none)",
    )
    g.add_argument(
        "--profile",
        default="a100-llama-3-8b",
        help="performance profile: a shipped name (a100-llama-3-8b, a100-llama-2-7b, "
        "h100-llama-2-7b, ...) or a JSON path (default: %(default)s)",
    )
    g.add_argument(
        "--workload",
        help="fitted lengths (conv, code, arxiv, cpu-small) or a trace CSV whose first rows are "
        "rescaled to the rate (default: the setting's, else conv)",
    )
    g.add_argument(
        "--slo", choices=list(SLO_RULES),
        help="SLO rule (default: the setting's, else strict). Not ascendra serve's fixed "
        f"{default_slo.DEFAULT_SLO.describe()}, which are set for its default model on a CPU: the "
        "default profile is an A100 (a 12 ms decode iteration), so the rules scale with the profile's "
        "own decode iteration (strict: TBT 5x it); 'serve' gives every request serve's defaults, for "
        "a CPU profile such as cpu-smollm2",
    )
    g.add_argument(
        "--num-requests", type=int, default=num_requests,
        help=f"requests per run (default: {default_text or num_requests})",
    )
    g.add_argument(
        "--arrival", choices=[*ARRIVAL_KINDS, "replay"],
        help="arrival process (default: the setting's, else poisson; replay with --trace)",
    )
    g.add_argument("--cv", type=float,
                   help="coefficient of variation of gamma arrivals (default: the setting's, else 1)")
    g.add_argument("--instances", type=int, default=4, help="instances in the cluster (default: %(default)s)")


def setting_from(args: argparse.Namespace) -> Setting:
    if args.setting:
        return setting(args.setting)
    if args.trace:
        return Setting("custom", f"{args.trace} replayed", None, "replay")
    return CUSTOM


def scenario_from(args: argparse.Namespace) -> Scenario:
    if args.num_requests < 1:
        raise ValueError("--num-requests must be at least 1")
    sc = setting_from(args).scenario(
        trace=args.trace, profile=args.profile, workload=args.workload, slo=args.slo,
        num_requests=args.num_requests, arrival=args.arrival, cv=args.cv,
    )
    sc.loaded  # load now: a bad profile name fails before any work starts  # noqa: B018
    if sc.arrival == "replay":
        sc.trace  # likewise a missing or malformed trace  # noqa: B018
    return sc
