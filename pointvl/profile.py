"""Switch the profile a params file runs: ``profile`` and the ``active`` block dvc.yaml reads.

    python -m pointvl.profile paper [--params params.yaml]
    python -m pointvl.profile --check [--params params.yaml]      (make repro runs it first)

DVC cannot look a value up by ``${profile}``, so params.yaml carries the active profile's
results folder and accelerate config as plain keys (``active``) beside ``profile``;
``load_params`` refuses a file where they disagree. This rewrites the three lines in place
(comments and layout kept) and checks the result by loading it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pointvl.config import PROFILES, ConfigError, load_params, results_root


def switch(path: str | Path, profile: str) -> dict:
    """Set ``profile`` and ``active`` of ``path`` for ``profile``; -> the new active values."""
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: expected one of {PROFILES}")
    path = Path(path)
    text = path.read_text()
    accelerate = load_params(path, profile, check_active=False)["launch"]["accelerate_config"]
    values = {"results_root": results_root(profile), "accelerate_config": accelerate}
    new, n = re.subn(r"(?m)^profile:[ \t]*\S+", f"profile: {profile}", text, count=1)
    if n != 1:
        raise ConfigError(f"{path}: no top-level 'profile:' line to set")
    for key, value in values.items():
        new, n = re.subn(rf"(?m)^(  {key}:[ \t]*)\S+", rf"\g<1>{value}", new, count=1)
        if n != 1:
            raise ConfigError(f"{path}: no 'active.{key}:' line to set")
    path.write_text(new)
    load_params(path, check_active=True)  # the file is consistent again
    return values


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("profile", nargs="?", choices=PROFILES)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check", action="store_true", help="only check profile vs active")
    args = ap.parse_args(argv)
    if (args.profile is None) == (not args.check):
        ap.error("give a profile to switch to, or --check")
    try:
        if args.check:
            p = load_params(args.params, check_active=True)["profile"]
            print(f"{args.params}: profile {p}, active block consistent")
            return
        values = switch(args.params, args.profile)
    except ConfigError as err:
        raise SystemExit(f"profile: config error: {err}") from None
    print(
        f"{args.params}: profile {args.profile}, "
        + ", ".join(f"{k} {v}" for k, v in values.items())
    )


if __name__ == "__main__":
    main()
