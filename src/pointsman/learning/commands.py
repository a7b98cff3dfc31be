"""`pointsman train | eval | calibrate`: argparse subcommands registered into the main CLI
(or run as ``python -m pointsman.learning``). Each returns an exit code; ``--json`` prints one
JSON document on stdout and sends progress to stderr."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

# Each command imports what it needs when it runs: `pointsman --help` loads no numpy or scikit-learn.

EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the `train`, `eval` and `calibrate` subcommands; each sets ``func``."""
    t = subparsers.add_parser(
        "train",
        help="train a router on outcome data and write its artifact",
        description="Train a router (encoders, quality predictor, calibrated knob) on outcome data. "
        "By default the seeded test split of each dataset is held out, so `pointsman eval` "
        "on the same data stays honest; --all-data trains on every row.",
    )
    t.add_argument("data", nargs="*", help="bundled set (mmlu, gsm8k, llmrouter) or file/folder")
    t.add_argument("--out", required=True, help="folder to write router.json and arrays.npz into")
    t.add_argument("--encoders", default="wordllama,signals,tfidf", help="comma-separated encoder blocks")
    t.add_argument("--candidates", default="", help="comma-separated learners to compare (default: all)")
    t.add_argument("--folds", type=int, default=5, help="cross-validation folds for selection")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--all-data", action="store_true", help="train on every row (no held-out test)")
    t.add_argument(
        "--drop-group", action="append", default=[], help="leave out a group (e.g. a mis-graded subject)"
    )
    t.add_argument(
        "--routes",
        action="store_true",
        help="one route per dataset: its own expert and knob, and a gate that picks the route",
    )
    t.add_argument("--prices", help="JSON {model: {input_price, output_price}} in $ per million tokens")
    t.add_argument(
        "--nested-calibration",
        action="store_true",
        help="calibrate presets on nested out-of-fold predictions (learner selection redone in "
        "each outer fold; about FOLDS times the training time)",
    )
    _ingest_arguments(t)
    logs = t.add_argument_group(
        "from logs",
        "--from-logs trains on the router's own records joined to their feedback (POST /v1/feedback): "
        "the rating each answer got, for its prompt and the deployment that answered. Records keep "
        "prompts only with store.store_content on.",
    )
    logs.add_argument("--from-logs", action="store_true", help="train on rated records instead of DATA")
    logs.add_argument("--config", help="the server's config: its record store and deployment prices")
    logs.add_argument("--db", help="the SQLite record file (default: the config's, else the default path)")
    logs.add_argument("--since", help="only records this recent, e.g. 12h, 30d")
    logs.add_argument("--deployments", default="", help="comma-separated deployments to choose between")
    logs.add_argument("--min-ratings", type=int, default=10, help="least ratings a deployment needs")
    t.add_argument("--json", action="store_true", help="print the training report as JSON")
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "eval",
        help="evaluate routers on held-out outcome data",
        description="Deployment curves and their numbers (APGR, CPT, cost to reach 95/100%% of the "
        "best single model, quality at its cost, AIQ) on each dataset's seeded held-out split, "
        "beside random, the best single model and the oracle.",
    )
    e.add_argument(
        "data", nargs="*", default=["mmlu", "gsm8k", "llmrouter"], help="datasets (default: all bundled)"
    )
    e.add_argument(
        "--router",
        default="auto",
        help="shipped name, artifact folder, 'auto' (the shipped router that fits each dataset) "
        "or 'train' (train on the train split first)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--test-fraction", type=float, default=0.2)
    e.add_argument("--split", choices=("test", "train", "all"), default="test", help="which rows to score")
    e.add_argument("--exclude-group", action="append", default=[], help="also report without this group")
    e.add_argument("--groups", action="store_true", help="print per-group (e.g. per-subject) results")
    e.add_argument("--plot", help="write a PNG of the curves here (needs matplotlib)")
    e.add_argument("--prices", help="JSON prices for datasets without costs")
    _ingest_arguments(e)
    e.add_argument("--curves", action="store_true", help="include the curves in --json output")
    e.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="90%% intervals from N resamples of the prompts"
    )
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=cmd_eval)

    c = subparsers.add_parser(
        "calibrate",
        help="set a router's cost-quality knob from a stated target",
        description="Turn a target into the router's knob (threshold or lambda), from the "
        "calibration table stored at training or from outcome data you give.",
    )
    c.add_argument("--router", default="default", help="shipped name or artifact folder")
    goal = c.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--strong-share", type=float, help="two models: at most this share of calls to the strong model"
    )
    goal.add_argument(
        "--cost-share",
        type=float,
        help="at most this share of the best single model's cost (dollars where costs are known, "
        "else the strong-call share)",
    )
    goal.add_argument(
        "--quality", type=float, help="keep this share of the best single model's quality at least cost"
    )
    c.add_argument(
        "--data", nargs="*", default=[], help="calibrate on these outcome data instead of the stored table"
    )
    c.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="all",
        help="rows of --data to use (train: the seeded training split)",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--test-fraction", type=float, default=0.2)
    _ingest_arguments(c)
    c.add_argument(
        "--write", action="store_true", help="store the knob in the artifact (as default, or under --preset)"
    )
    c.add_argument("--preset", help="name to store the knob under instead of the default")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_calibrate)

    # The verifier keeps its own subcommand beside its training code.
    from pointsman.learning.verifier import register as register_verifier

    register_verifier(subparsers)


# --------------------------------------------------------------------------- helpers


def _ingest_arguments(parser: Any) -> None:
    g = parser.add_argument_group(
        "reading CSV/JSONL files",
        "column options for your own outcome files (see docs/learned-routing.md: RouterBench and "
        "RouterDC layouts)",
    )
    g.add_argument("--prompt-column", default="prompt", help="the column (JSONL: key) holding the prompt")
    g.add_argument(
        "--model-columns", default="", help="comma-separated model quality columns (default: all others)"
    )
    g.add_argument("--ignore-columns", default="", help="comma-separated columns that are not models")
    g.add_argument("--group-column", default="group", help="the task/group column (e.g. eval_name, dataset)")
    g.add_argument(
        "--cost-columns",
        default="{model}_cost",
        help="per-call dollar cost column, {model} standing for the model column (e.g. '{model}|total_cost')",
    )
    g.add_argument(
        "--quality-range",
        help="LOW,HIGH: the range quality is given in (e.g. 1,10), scaled to 0..1; values outside "
        "are clipped with a warning",
    )


def _ingest(args: argparse.Namespace) -> Any:
    from pointsman.learning.datasets import DatasetError, Ingest

    rng = None
    if getattr(args, "quality_range", None):
        try:
            lo, hi = (float(v) for v in args.quality_range.split(","))
        except ValueError:
            raise DatasetError(f"--quality-range: expected LOW,HIGH, got {args.quality_range!r}") from None
        rng = (lo, hi)
    return Ingest(
        prompt=args.prompt_column,
        models=[m for m in args.model_columns.split(",") if m] or None,
        ignore=[m for m in args.ignore_columns.split(",") if m],
        group=args.group_column,
        cost=args.cost_columns,
        quality_range=rng,
    )


def _held_out_warning(spec: str, total: int, kept: int, what: str) -> str | None:
    """The warning for a user's own file of which only part is used (None for bundled sets)."""
    from pointsman.learning.datasets import BUNDLED

    if spec in BUNDLED or kept == total:
        return None
    return f"{spec}: {what} {kept} of its {total} rows"


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _load(spec: str, prices: str | None, ingest: Any = None) -> Any:
    from pointsman.learning.datasets import load_dataset

    return load_dataset(spec, prices, ingest)


def _rows(data: Any, split: str, seed: int, fraction: float) -> Any:
    from pointsman.learning.datasets import split_by_prompt

    if split == "all":
        return data
    train, test = split_by_prompt(data.prompts, fraction, seed, "test")
    return data.subset(train if split == "train" else test)


def _fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message}))
    else:
        _err_console().print(f"[red]error:[/red] {message}")
    return 1


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from pointsman.learning.datasets import DatasetError
    from pointsman.learning.training import train_router

    if args.from_logs:
        return cmd_train_from_logs(args)
    if not args.data:
        return _fail(
            "give the outcome data to train on (e.g. mmlu gsm8k, or a file), or --from-logs", args.json
        )
    console = _err_console()
    warnings: list[str] = []
    try:
        ingest = _ingest(args)
        datasets = []
        for d in args.data:
            whole = _load(d, args.prices, ingest)
            part = _rows(whole, "all" if args.all_data else "train", args.seed, args.test_fraction)
            warnings += [n[len("warning: ") :] for n in whole.notes if n.startswith("warning: ")]
            held = _held_out_warning(d, len(whole), len(part), "training on the seeded train split:")
            if held:
                left = len(whole) - len(part)
                held += f" ({left} held out for `pointsman eval`; --all-data trains on every row)"
                warnings.append(held)
                console.print(f"[yellow]warning:[/yellow] {held}")
            datasets.append(part)
    except DatasetError as exc:
        return _fail(str(exc), args.json)
    meta = {
        "command": "pointsman train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2
        else "",
        "split": "all rows"
        if args.all_data
        else f"train split (test_fraction={args.test_fraction}, seed={args.seed}, by prompt)",
    }
    with console.status("training") as status:

        def show_progress(msg: str) -> None:
            status.update(f"training: {msg}")
            console.log(msg)

        artifact, selection = train_router(
            datasets,
            encoders=[e for e in args.encoders.split(",") if e],
            candidates=[c for c in args.candidates.split(",") if c] or None,
            folds=args.folds,
            seed=args.seed,
            drop_groups=args.drop_group,
            routes=args.routes,
            progress=show_progress,
            meta=meta,
            nested=args.nested_calibration,
        )
    folder = artifact.save(args.out)
    report = {
        "artifact": str(folder),
        "kind": artifact.kind,
        "models": artifact.models,
        "tiers": artifact.tiers,
        "rows": sum(len(d) for d in datasets),
        "routes": artifact.routes,
        "chosen": selection.chosen,
        "weights": selection.weights,
        "selection": selection.table,
        "route_selection": artifact.meta.get("routes", {}),
        "knob": artifact.knob,
        "presets": artifact.presets,
        "warnings": warnings + artifact.meta.get("warnings", []),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from rich.table import Table

        table = Table(
            title=f"candidates ({artifact.meta['selection_metric']}, {args.folds}-fold out-of-fold)",
            title_justify="left",
        )
        table.add_column("route")
        table.add_column("candidate")
        table.add_column("score", justify="right")
        table.add_column("per dataset", justify="right")
        table.add_column("seconds", justify="right")
        per_route = artifact.meta.get("routes", {})
        sections = [(r, per_route[r]["selection"]) for r in artifact.routes] or [("", selection.table)]
        for route, rows in sections:
            for row in rows:
                table.add_row(
                    route,
                    row["candidate"],
                    f"{row['score']:.4f}",
                    " ".join(f"{p:.3f}" for p in row.get("per_dataset", [])),
                    str(row["seconds"]),
                )
        from rich.console import Console

        out = Console()
        out.print(table)
        if "gate_accuracy" in per_route:
            out.print(f"route gate: {per_route['gate_accuracy']:.1%} out-of-fold accuracy")
        out.print(
            f"wrote {folder} ({artifact.kind}, models: {', '.join(artifact.models)}); "
            f"default knob {artifact.knob.get('threshold', artifact.knob.get('lambda'))} "
            f"(routes: {artifact.knob.get('routes') and list(artifact.knob['routes'])})"
        )
    return 0


def cmd_train_from_logs(args: argparse.Namespace) -> int:
    """`pointsman train --from-logs`: rated records -> the same artifact as `train`."""
    from pointsman.learning.datasets import read_prices
    from pointsman.learning.logs import (
        LogsError,
        config_prices,
        open_records,
        outcomes_from_records,
        train_from_logs,
    )

    if args.data:
        return _fail("--from-logs reads the records; give no DATA", args.json)
    console = _err_console()
    since = None
    if args.since:
        import time

        from pointsman.store import parse_duration

        try:
            since = time.time() - parse_duration(args.since)
        except ValueError:
            raise SystemExit(
                f"--since: expected a duration like 30m, 12h or 7d, got {args.since!r}"
            ) from None
    try:
        store = open_records(args.config, args.db)
        try:
            records = store.feedback_records(since)
        finally:
            store.close()
        outcomes = outcomes_from_records(
            records, [d for d in args.deployments.split(",") if d] or None, args.min_ratings
        )
        prices = config_prices(args.config)
        if args.prices:
            prices.update(read_prices(Path(args.prices)))
        meta = {
            "command": "pointsman train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 2
            else "",
            "split": "all rated records" + (f" since {args.since} ago" if args.since else ""),
        }
        with console.status("training on rated records") as status:

            def say(message: str) -> None:
                status.update(f"training: {message}")
                console.log(message)

            artifact, report = train_from_logs(
                outcomes,
                encoders=[e for e in args.encoders.split(",") if e],
                folds=args.folds,
                seed=args.seed,
                prices=prices,
                progress=say,
                meta=meta,
            )
    except LogsError as exc:
        return _fail(str(exc), args.json)
    folder = artifact.save(args.out)
    result = {
        "artifact": str(folder),
        "kind": artifact.kind,
        "models": artifact.models,
        "tiers": artifact.tiers,
        "logs": outcomes.summary(),
        **report,
        "knob": artifact.knob,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    summary = outcomes.summary()
    print(
        f"{summary['used_requests']} rated requests on {summary['prompts']} prompts "
        f"({', '.join(f'{m}: {n}' for m, n in summary['ratings_per_deployment'].items())}); "
        f"{summary['observed_cells']:.0%} of (prompt, deployment) pairs rated"
    )
    for why, n in summary["skipped"].items():
        print(f"  skipped {n}: {why}")
    metric = "out-of-fold Brier, lower is better" if report["method"] == "partial" else "selection score"
    print(f"learners ({metric}):")
    for row in report["selection"]:
        value = row.get("brier", row.get("score"))
        print(f"  {row['candidate']}: {value}{'  <- chosen' if row['candidate'] in report['chosen'] else ''}")
    if report.get("warning"):
        print(f"warning: {report['warning']}")
    key = "threshold" if artifact.kind == "two_model" else "lambda"
    mapping = ", ".join(f"{t}: [{m}]" for t, m in artifact.tiers.items())
    print(f"wrote {folder} ({artifact.kind}; {key} {artifact.knob.get(key)})")
    print(f"config: strategy: learned, options: {{artifact: {folder}, mapping: {{{mapping}}}}}")
    return 0


# --------------------------------------------------------------------------- eval


def _router_for(spec: str, data: Any, cache: dict[str, Any]) -> tuple[str, Any]:
    from pointsman.learning.artifact import RouterArtifact, read_manifest, shipped_routers

    if spec != "auto":
        if spec not in cache:
            cache[spec] = RouterArtifact.load(spec)
        return spec, cache[spec]
    for name in shipped_routers():
        doc = read_manifest(name)
        fits = (doc["kind"] == "two_model" and data.two_model) or (
            doc["kind"] == "multi_model" and set(doc["models"]) <= set(data.models)
        )
        if fits:
            if name not in cache:
                cache[name] = RouterArtifact.load(name)
            return name, cache[name]
    raise LookupError(f"{data.name}: no shipped router fits its models; pass --router PATH or --router train")


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from pointsman.learning.artifact import ArtifactError
    from pointsman.learning.datasets import DatasetError, standard_splits
    from pointsman.learning.evaluation import evaluate, plot, render

    console = _err_console()
    reports = []
    cache: dict[str, Any] = {}
    try:
        ingest = _ingest(args)
        loaded = [_load(d, args.prices, ingest) for d in args.data]
    except DatasetError as exc:
        return _fail(str(exc), args.json)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        for spec, data in zip(args.data, loaded, strict=True):
            splits = standard_splits(data, args.seed, args.test_fraction)
            rows = {"test": splits.test, "train": splits.train, "all": data}[args.split]
            held = _held_out_warning(
                spec, len(data), len(rows), f"scoring only the seeded {args.split} split:"
            )
            if held:
                held += " (--split all scores every row; only rows the router never trained on are honest)"
                console.print(f"[yellow]warning:[/yellow] {held}")
                data.notes.append(f"warning: {held}")
                rows.notes.append(f"warning: {held}")
            try:
                if args.router == "train":
                    from pointsman.learning.training import train_router

                    task = progress.add_task(
                        f"{data.name}: training on {len(splits.train)} prompts", total=None
                    )

                    def show_progress(m: str, t: TaskID = task, d: str = data.name) -> None:
                        progress.update(t, description=f"{d}: {m}")

                    artifact, _ = train_router([splits.train], progress=show_progress)
                    progress.remove_task(task)
                    name = "trained"
                else:
                    name, artifact = _router_for(args.router, data, cache)
                task = progress.add_task(f"{data.name}: routing {len(rows)} prompts", total=len(rows))

                def advance(k: int, t: TaskID = task) -> None:
                    progress.advance(t, k)

                found = evaluate(
                    artifact,
                    rows,
                    name=Path(name).name,
                    advance=advance,
                    exclude_groups=args.exclude_group,
                    bootstrap=args.bootstrap,
                    seed=args.seed,
                )
            except (ArtifactError, DatasetError, LookupError) as exc:
                return _fail(str(exc), args.json)
            found[0].notes.append(
                f"{args.split} split: seed {args.seed}, test fraction {args.test_fraction}, by prompt"
            )
            reports.extend(found)
    if args.plot:
        plot(reports, args.plot)
        console.print(f"wrote {args.plot}")
    if args.json:
        print(json.dumps({"datasets": [r.as_dict(curves=args.curves) for r in reports]}, indent=2))
    else:
        from rich.console import Console

        render(reports, Console(), groups=args.groups)
    return 0


# --------------------------------------------------------------------------- calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pointsman.learning.artifact import ArtifactError, RouterArtifact, resolve_artifact
    from pointsman.learning.calibration import (
        CalibrationError,
        Target,
        knob_for,
        multi_model_table,
        two_model_table,
    )
    from pointsman.learning.datasets import DatasetError
    from pointsman.learning.evaluation import align, predict_all
    from pointsman.learning.training import combine

    try:
        target = Target(strong_share=args.strong_share, cost_share=args.cost_share, quality=args.quality)
        folder = resolve_artifact(args.router)
        artifact = RouterArtifact.load(folder)
        cost_warning = artifact.warn_missing_costs("calibrate")
        table = artifact.calibration
        source = "stored tables (out-of-fold predictions on the training data)"
        in_sample = None
        if args.data:
            from pointsman.learning.datasets import with_prices
            from pointsman.learning.evaluation import serving_costs

            loaded = [_load(d, None, _ingest(args)) for d in args.data]
            trained = {t.get("name") for t in artifact.meta.get("trained_on", [])}
            all_rows = str(artifact.meta.get("split", "")).startswith("all")
            overlap = [d.name for d in loaded if d.name in trained and (args.split != "test" or all_rows)]
            if overlap:
                in_sample = (
                    f"calibrating on rows the router was trained on ({', '.join(overlap)}, {args.split} "
                    "rows): its predictions there are in-sample and optimistic, so the knob will "
                    "over-promise on new traffic. Use --split test, your own held-out traffic, or the "
                    "stored out-of-fold tables (no --data)."
                )
                _err_console().print(f"[bold red]warning:[/bold red] {in_sample}")
            parts = []
            for d in loaded:
                part = align(_rows(d, args.split, args.seed, args.test_fraction), artifact)
                if (
                    part.cost_unit != "$"
                    and artifact.prices
                    and all(m in artifact.prices for m in part.models)
                ):
                    part = with_prices(part, artifact.prices)
                parts.append(part)
            data, _ = combine(parts)
            pred, routes = predict_all(artifact, data.prompts)
            decide = serving_costs(artifact, data.prompts)

            def make(rows: Any) -> dict[str, Any]:
                if artifact.decision == "threshold":
                    return two_model_table(pred[rows, 1] - pred[rows, 0], data.quality[rows])
                return multi_model_table(
                    pred[rows], data.cost[rows], data.quality[rows], decide[rows], artifact.cost_ref
                )

            import numpy as np

            table = make(np.arange(len(data)))
            per_route = {}
            for r in artifact.routes:
                rows = np.array([i for i, x in enumerate(routes) if x == r], dtype=np.int64)
                if len(rows):
                    per_route[r] = make(rows)
            if per_route:
                table["routes"] = per_route
            source = f"{', '.join(args.data)} ({args.split} rows, {len(data)} prompts)"
        knob = knob_for(artifact.decision, table, target)
        route_knobs = {r: knob_for(artifact.decision, t, target) for r, t in table.get("routes", {}).items()}
    except (ArtifactError, CalibrationError, DatasetError) as exc:
        return _fail(str(exc), args.json)
    if route_knobs:
        knob["routes"] = route_knobs
    knob["target"] = {k: v for k, v in vars(target).items() if v is not None}
    result = {
        "router": str(folder),
        "kind": artifact.kind,
        "target": target.describe(),
        "source": source,
        **knob,
        "confidence": "quality targets on a one-sided 90% bootstrap lower bound, cost targets on the upper",
        "warnings": [w for w in (cost_warning, in_sample) if w],
    }
    if args.write:
        if args.preset:
            artifact.presets[args.preset] = knob
        else:
            artifact.knob = knob
            if args.data:
                artifact.calibration = table
        artifact.save(folder)
        result["written"] = f"{'preset ' + args.preset if args.preset else 'default knob'} in {folder}"
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        key = artifact.knob_key
        print(f"{target.describe()}: {key} = {knob[key]:.6g}  (from {source})")
        print("expected: " + ", ".join(f"{k} {v:.3f}" for k, v in knob["expected"].items()))
        for r, k in route_knobs.items():
            exp = ", ".join(f"{n} {v:.3f}" for n, v in k["expected"].items())
            print(f"  route {r}: {key} = {k[key]:.6g}; expected {exp}")
        t = knob["target"]
        print(f"config: options: {{artifact: {args.router}, target: {json.dumps(t)}}}")
        if args.write:
            print(f"wrote {result['written']}")
        for warning in result["warnings"]:
            print(f"WARNING: {warning}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pointsman.learning", description="pointsman learned routing"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    bundle = sub.add_parser(
        "bundle", help="(maintainers) rebuild the bundled outcome data from the shared folder"
    )
    bundle.add_argument("shared", help="the shared data folder (routellm/, llmrouter/)")
    bundle.set_defaults(func=_cmd_bundle)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _cmd_bundle(args: argparse.Namespace) -> int:
    from pointsman.learning.datasets import build_bundle, bundled_dir

    manifest = build_bundle(Path(args.shared), bundled_dir())
    print(json.dumps({k: v["rows"] for k, v in manifest["datasets"].items()}))
    return 0
