"""The one entry point of every stage: arguments -> params -> typed configs -> checks -> one call.

A stage module is a ``Stage`` and two lines::

    STAGE = Stage(
        "eval_trivial", __doc__,
        sections={"eval_trivial": EvalTrivialConfig},         # params section -> dataclass
        flags=[Flag("--limit", to="eval_trivial.limit")],     # a flag that sets a field
        run=lambda ctx: evaluate_trivial(ctx.eval_trivial, ctx.profile),
    )
    main = STAGE.main
    if __name__ == "__main__":
        main()

``Stage.main(argv)``, in this order, before any file is touched:

1. parses ``--params`` (default ``params.yaml``), ``--profile`` and the stage's ``flags``;
2. ``load_params``: the YAML, its structure, the profile merge, ``${shared.<name>}``;
3. every section in ``sections`` -> its dataclass through ``config.from_dict``: section vs
   scalar, unknown keys, each field's type from its annotation (``int`` / ``float`` finite /
   ``bool`` / ``str`` / lists / mappings / ``Annotated`` ranges and choices), then
   ``validate()`` (rules across fields);
4. flags with ``to="<section>.<field>"`` replace that field through the same checks
   (``config.with_overrides``; the flag's text is read as YAML for non-string fields, so
   ``--max-steps -7`` is the integer -7 and is refused by the range);
5. ``{profile}`` is filled in every string field (``fill_profile``), then ``prepare(ctx)``
   runs, if given: checks that need the disk but write nothing (is the dataset built?);
6. ``run(ctx)``: the one package call; its result is printed as JSON (``show`` picks what).

Failures are one line on stderr and an exit code, never a traceback: a ``ConfigError``
(bad params or flags, also bad YAML) -> ``<stage>: config error: <message>``, exit 2; a
``DataError`` (unusable input data) -> ``<stage>: error: <message>``, exit 1; a bad flag ->
``<stage>: error: <argparse's message>``, exit 2. Anything else is a bug and keeps its traceback.

Converting a stage whose ``main`` is written by hand (e.g. ``rl``): keep its dataclasses,
list them in ``sections``, turn each ``ap.add_argument("--x", ...)`` that overrides a field
into ``Flag("--x", to="rl.x")`` and the others into ``Flag("--x", ...)`` (argparse keywords;
read back as ``ctx.args.x``), move the input checks into ``prepare`` and the body into
``run``. ``validate_sections(params, profile)`` checks every section of params.yaml at once
(``SECTIONS`` names their dataclasses) without running anything.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pointvl.config import ConfigError, DataError, from_dict, load_params, with_overrides

SECTIONS = {
    "schema": "pointvl.config:SchemaConfig",
    "credit_demo": "pointvl.config:CreditDemoConfig",
    "build_dataset": "pointvl.data.build:BuildDatasetConfig",
    "notebooks": "pointvl.notebooks:NotebookConfig",
    "model": "pointvl.model.config:ModelConfig",
    "train_tokenizer": "pointvl.model.tokenizer:TrainTokenizerConfig",
    "sft": "pointvl.train.config:SFTConfig",
    "rl": "pointvl.train.config:RLConfig",
    "eval_trivial": "pointvl.eval.trivial:EvalTrivialConfig",
    "evaluate": "pointvl.stages.evaluate:EvaluateConfig",
    "report": "pointvl.stages.report:ReportConfig",
    "baselines": "pointvl.baselines.experiment:BaselineConfig",
    "zeroshot": "pointvl.eval.zeroshot_table:ZeroShotConfig",
    "figures": "pointvl.stages.figures:FiguresConfig",
    "credit_lab": "pointvl.train.lab:LabConfig",
    "launch": "pointvl.train.launch:LaunchConfig",
}
"""Every section of params.yaml -> ``module:Class`` of its dataclass (imported on use)."""


OUTPUT_FIELDS = {
    "credit_demo": ("out_dir", "metrics"),
    "build_dataset": ("out_dir", "metrics", "figures_dir"),
    "train_tokenizer": ("out_dir", "metrics"),
    "eval_trivial": ("metrics", "probes"),
    "baselines": ("out_dir", "predictions_dir", "metrics_dir", "log_dir"),
    "zeroshot": ("predictions_dir", "metrics"),
    "sft": ("out_dir", "log_dir", "metrics"),
    "rl": ("out_dir", "log_dir", "metrics"),
    "evaluate": ("predictions_dir", "metrics_dir"),
    "report": ("tables_dir", "figures_dir"),
    "figures": ("out_dir", "metrics"),
    "credit_lab": ("out_dir",),
    "notebooks": ("out_dir",),
}
"""The fields of each section that name something a stage writes."""


def redirect_outputs(raw: dict, root: str | Path, profile: str) -> dict:
    """A copy of raw params.yaml whose ``profile`` block sends every output under ``root``
    (tests and ``scripts/reliability.py`` run stages without touching the repository)."""
    raw = copy.deepcopy(raw)
    block = raw.setdefault("overrides", {}).setdefault(profile, {})
    for section, keys in OUTPUT_FIELDS.items():
        values = block.setdefault(section, {}) or {}
        block[section] = values
        for key in keys:
            values.setdefault(key, str(Path(root) / section / key))
    return raw


def section_class(name: str) -> type:
    module, _, cls = SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def validate_sections(params: str | None = None, profile: str | None = None) -> dict:
    """Every section of params.yaml as its checked dataclass: {section: config}."""
    merged = load_params(params, profile)
    return {name: from_dict(section_class(name), merged.get(name), name) for name in SECTIONS}


def fill_profile(cfg: Any, profile: str) -> Any:
    """``cfg`` with ``{profile}`` replaced in its string fields (and string values of mappings)."""

    def fill(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("{profile}", profile)
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v

    return dataclasses.replace(
        cfg, **{f.name: fill(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    )


@dataclasses.dataclass
class Flag:
    """A command-line flag: ``to="<section>.<field>"`` sets a config field (typed by the
    field's annotation); without ``to`` it is a plain argparse argument (``ctx.args``)."""

    name: str
    to: str | None = None
    help: str | None = None
    kwargs: dict = dataclasses.field(default_factory=dict)

    def __init__(self, name: str, to: str | None = None, help: str | None = None, **kwargs):
        self.name, self.to, self.help, self.kwargs = name, to, help, kwargs

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclasses.dataclass
class Context:
    """What ``prepare`` and ``run`` get: ``ctx.<section>`` is that section's config."""

    profile: str
    params: dict
    args: argparse.Namespace
    configs: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        configs = self.__dict__.get("configs", {})
        if name in configs:
            return configs[name]
        raise AttributeError(name)


class StageExit(SystemExit):
    """Exit with ``code`` after printing ``message``; ``str()`` is the message (for tests)."""

    def __init__(self, code: int, message: str):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise StageExit(2, f"{self.prog}: error: {message} (see --help)")


@dataclasses.dataclass
class Stage:
    """A DVC stage: its params sections, flags and the one package call (module docstring)."""

    name: str
    doc: str | None
    sections: dict[str, type]
    run: Callable[[Context], Any]
    flags: Sequence[Flag] = ()
    prepare: Callable[[Context], None] | None = None
    show: Callable[[Any], Any] | None = None
    """What of ``run``'s result to print as JSON (default: all of it; None result: nothing)."""

    def parser(self) -> argparse.ArgumentParser:
        ap = _Parser(prog=self.name, description=(self.doc or "").strip().splitlines()[0])
        ap.add_argument(
            "--params", default="params.yaml", help="params file (default: %(default)s)"
        )
        ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
        for flag in self.flags:
            kwargs = dict(flag.kwargs)
            if flag.to is not None:
                kwargs.setdefault("default", None)
                kwargs.setdefault("metavar", flag.to.split(".")[-1].upper())
            ap.add_argument(flag.name, help=flag.help or (flag.to and f"override {flag.to}"),
                            **kwargs)  # fmt: skip
        return ap

    def context(self, argv: Sequence[str] | None = None) -> Context:
        """Steps 1-5 of the module docstring: everything before the work."""
        args = self.parser().parse_args(argv)
        params = load_params(args.params, args.profile)
        configs = {s: from_dict(cls, params.get(s), s) for s, cls in self.sections.items()}
        for flag in self.flags:
            value = getattr(args, flag.dest, None)
            if flag.to is not None and value is not None:
                section, _, key = flag.to.partition(".")
                configs[section] = with_overrides(configs[section], section, {key: value})
        profile = params["profile"]
        configs = {s: fill_profile(c, profile) for s, c in configs.items()}
        ctx = Context(profile, params, args, configs)
        if self.prepare is not None:
            self.prepare(ctx)
        return ctx

    def main(self, argv: Sequence[str] | None = None) -> Any:
        try:
            ctx = self.context(argv)
            result = self.run(ctx)
        except ConfigError as err:
            self._fail(2, f"{self.name}: config error: {err}")
        except DataError as err:
            self._fail(1, f"{self.name}: error: {err}")
        except StageExit as err:
            self._fail(err.code, err.message)
        shown = self.show(result) if self.show is not None else result
        if shown is not None:
            print(json.dumps(shown, indent=1, default=str))
        return result

    @staticmethod
    def _fail(code: int, message: str):
        line = " ".join(str(message).split())  # one line
        print(line, file=sys.stderr)
        raise StageExit(code, line) from None
