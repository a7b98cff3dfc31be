"""Routing-outcome datasets: prompts, the models tried on them, and how well each did.

Formats read (see docs/learned-routing.md for the generic ones):

- the bundled sets by name: ``mmlu``, ``gsm8k``, ``llmrouter`` (derived copies in
  ``pointsman/data/outcomes``, licences kept beside them);
- RouteLLM: a folder of ``mmlu_*.csv`` or one CSV with a ``prompt`` column and one True/False
  column per model (``*_response`` columns are read for output lengths only), with an optional
  ``contaminated_prompts.jsonl`` next to it whose prompts are dropped;
- LLMRouter: ``train.json`` (``[{question, scores: {model: 0..1}}]``) with ``models.json`` prices
  next to it when present;
- generic JSONL: one object a line, ``{"prompt", "scores": {model: 0..1}}`` plus optional
  ``"costs"``, ``"output_tokens"`` (both ``{model: number}``) and ``"group"``;
- generic CSV: ``prompt``, one quality column per model, optional ``group``, ``<model>_cost`` and
  ``<model>_output_tokens`` columns.

Other layouts load with `Ingest` options (the CLI's ``--prompt-column``, ``--model-columns``,
``--ignore-columns``, ``--group-column``, ``--cost-columns``, ``--quality-range``), e.g.
RouterBench's CSV (``prompt``, ``eval_name``, ``<model>``, ``<model>|model_response``,
``<model>|total_cost``) with ``--group-column eval_name --cost-columns '{model}|total_cost'
--ignore-columns sample_id,oracle_model_to_route_to``, and RouterDC-style CSVs (``question``,
one score column per model, a ``dataset`` task column) with ``--prompt-column question
--group-column dataset``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("pointsman.learning")

# Characters per token, the same rule as `pointsman.signals.CHARS_PER_TOKEN`.
CHARS_PER_TOKEN = 4
# Output tokens assumed per call when a dataset records none (costs from prices need a length).
DEFAULT_OUTPUT_TOKENS = 256
BUNDLED = ("mmlu", "gsm8k", "llmrouter")
# Columns of RouteLLM CSVs and generic CSVs that are not model names.
_RESERVED_COLUMNS = {"prompt", "group", "id"}


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and what is wrong."""


# Column suffixes that belong to a model column and are never models themselves.
_DERIVED_SUFFIXES = ("_response", "_cost", "_output_tokens", "|model_response", "|total_cost")


@dataclass
class Ingest:
    """How to read a user's CSV or JSONL: which column holds the prompt, which hold each
    model's quality (default: every column not otherwise named), which to ignore, the task or
    group column, where per-call costs are (``{model}`` stands for the model column) and the
    range quality is given in (scaled to 0..1; values outside it are clipped with a warning)."""

    prompt: str = "prompt"
    models: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    group: str = "group"
    cost: str = "{model}_cost"
    quality_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.quality_range is not None:
            lo, hi = self.quality_range
            if not hi > lo:
                raise DatasetError(f"quality range must be LOW,HIGH with HIGH > LOW, got {lo},{hi}")

    def model_columns(self, columns: Sequence[str], where: str) -> list[str]:
        if self.models:
            missing = [m for m in self.models if m not in columns]
            if missing:
                raise DatasetError(f"{where}: no column {', '.join(missing)} (columns: {', '.join(columns)})")
            return list(self.models)
        reserved = _RESERVED_COLUMNS | {self.prompt, self.group, *self.ignore}
        found = [c for c in columns if c not in reserved and not c.endswith(_DERIVED_SUFFIXES)]
        costs = {self.cost.format(model=m) for m in found}
        return [c for c in found if c not in costs]


class _Clipper:
    """Scales raw quality to 0..1 by the ingest range and counts what had to be clipped."""

    def __init__(self, ingest: Ingest | None) -> None:
        self.range = ingest.quality_range if ingest else None
        self.clipped = 0

    def __call__(self, raw: Any, where: str) -> float:
        if self.range is None:
            return _quality_value(raw, where)
        lo, hi = self.range
        value = _number(raw, where)
        scaled = (value - lo) / (hi - lo)
        if not 0.0 <= scaled <= 1.0:
            self.clipped += 1
            scaled = min(1.0, max(0.0, scaled))
        return scaled


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    text = str(raw).strip().lower()
    if text in ("true", "yes"):
        return 1.0
    if text in ("false", "no"):
        return 0.0
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: quality must be a number or True/False, got {raw!r}") from None
    if math.isnan(value):
        raise DatasetError(f"{where}: quality is NaN")
    return value


@dataclass
class OutcomeData:
    """Recorded outcomes: ``quality[i, j]`` is how well ``models[j]`` answered ``prompts[i]`` (0..1).

    ``cost[i, j]`` is the price of that call in dollars, or, for two-model sets without prices,
    1 for the strong model and 0 for the weak one, so that the cost axis is the strong-call share.
    """

    name: str
    prompts: list[str]
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray
    groups: list[str] | None = None
    output_tokens: np.ndarray | None = None
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    strong: str | None = None
    weak: str | None = None
    cost_unit: str = "$"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if self.quality.shape != (n, m) or self.cost.shape != (n, m):
            raise DatasetError(
                f"{self.name}: quality {self.quality.shape} and cost {self.cost.shape} "
                f"must both be ({n}, {m})"
            )
        if m == 2 and self.strong is None:
            means = self.quality.mean(axis=0)
            strong = int(np.argmax(means))
            self.strong, self.weak = self.models[strong], self.models[1 - strong]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def two_model(self) -> bool:
        return len(self.models) == 2

    def subset(self, index: Sequence[int] | np.ndarray) -> OutcomeData:
        idx = np.asarray(index, dtype=np.int64)
        return OutcomeData(
            name=self.name,
            prompts=[self.prompts[i] for i in idx],
            models=list(self.models),
            quality=self.quality[idx],
            cost=self.cost[idx],
            groups=[self.groups[i] for i in idx] if self.groups is not None else None,
            output_tokens=self.output_tokens[idx] if self.output_tokens is not None else None,
            prices=dict(self.prices),
            strong=self.strong,
            weak=self.weak,
            cost_unit=self.cost_unit,
            notes=list(self.notes),
        )

    def ordered_two(self) -> OutcomeData:
        """The same data with columns ordered (weak, strong), as two-model routers expect."""
        if not self.two_model:
            raise DatasetError(f"{self.name}: not a two-model dataset ({len(self.models)} models)")
        if self.models == [self.weak, self.strong]:
            return self
        order = [self.models.index(self.weak), self.models.index(self.strong)]  # type: ignore[arg-type]
        out = self.subset(np.arange(len(self)))
        out.models = [self.models[j] for j in order]
        out.quality = self.quality[:, order]
        out.cost = self.cost[:, order]
        if self.output_tokens is not None:
            out.output_tokens = self.output_tokens[:, order]
        return out


# --------------------------------------------------------------------------- splits


def _prompt_key(seed: int, salt: str, prompt: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{salt}\x00{prompt}".encode()).digest()


def split_by_prompt(
    prompts: Sequence[str], test_fraction: float = 0.2, seed: int = 0, salt: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): identical prompts always land on the same side.

    Distinct prompts are ordered by a seeded SHA-256 of their text and the first
    ``round(test_fraction * distinct)`` go to test, so the split depends only on the prompts,
    the seed and the salt, never on row order or the platform.
    """
    distinct = sorted(set(prompts), key=lambda p: _prompt_key(seed, salt, p))
    n_test = int(round(test_fraction * len(distinct)))
    test_prompts = set(distinct[:n_test])
    test = np.array([i for i, p in enumerate(prompts) if p in test_prompts], dtype=np.int64)
    train = np.array([i for i, p in enumerate(prompts) if p not in test_prompts], dtype=np.int64)
    return train, test


@dataclass
class Splits:
    """The fixed held-out protocol: test is never used for fitting or tuning; validation is
    carved from train for model selection and calibration."""

    train: OutcomeData
    validation: OutcomeData
    fit: OutcomeData  # train minus validation
    test: OutcomeData


def standard_splits(data: OutcomeData, seed: int = 0, test_fraction: float = 0.2) -> Splits:
    train_idx, test_idx = split_by_prompt(data.prompts, test_fraction, seed, "test")
    train = data.subset(train_idx)
    fit_idx, val_idx = split_by_prompt(train.prompts, 0.2, seed, "validation")
    return Splits(train, train.subset(val_idx), train.subset(fit_idx), data.subset(test_idx))


# --------------------------------------------------------------------------- loading


def load_dataset(
    spec: str | Path, prices: str | Path | None = None, ingest: Ingest | None = None
) -> OutcomeData:
    """Load a bundled set by name, or a file/folder in one of the formats in the module doc
    (`ingest`: column options for CSV and JSONL files)."""
    text = str(spec)
    if text in BUNDLED:
        bundled = load_bundled(text)
        return with_prices(bundled, read_prices(Path(prices))) if prices is not None else bundled
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{spec}: no such file or folder, and not a bundled set ({', '.join(BUNDLED)})")
    if path.is_dir():
        if list(path.glob("mmlu_*.csv")):
            data = load_routellm_csvs(sorted(path.glob("mmlu_*.csv")), name=path.name)
        elif (path / "train.json").exists():
            data = load_llmrouter(path / "train.json")
        elif len(list(path.glob("*.csv"))) == 1:
            data = load_routellm_csvs(list(path.glob("*.csv")), name=path.name)
        else:
            raise DatasetError(f"{path}: folder holds no recognised outcome files")
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        data = load_jsonl(path, ingest)
    elif path.suffix == ".json":
        data = load_llmrouter(path)
    elif path.name.endswith((".csv", ".csv.gz")):
        data = load_routellm_csvs([path], name=path.name.split(".")[0], ingest=ingest)
    else:
        raise DatasetError(f"{path}: unknown format (expected .jsonl, .jsonl.gz, .json or .csv)")
    if prices is not None:
        data = with_prices(data, read_prices(Path(prices)))
    return data


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8", newline="")


def _quality_value(raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = str(raw).strip().lower()
        if text in ("true", "yes"):
            return 1.0
        if text in ("false", "no"):
            return 0.0
        try:
            value = float(text)
        except ValueError:
            raise DatasetError(
                f"{where}: quality must be a number in 0..1 or True/False, got {raw!r}"
            ) from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise DatasetError(
            f"{where}: quality must be in 0..1, got {raw!r} (give --quality-range LOW,HIGH to scale "
            "another range; values outside it are clipped with a warning)"
        )
    return value


def _contaminated(folder: Path) -> set[str]:
    path = folder / "contaminated_prompts.jsonl"
    if not path.exists():
        return set()
    out = set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.add(row.get("eval_prompt") or row.get("prompt", ""))
    return out


def load_routellm_csvs(
    paths: Sequence[Path], name: str | None = None, ingest: Ingest | None = None
) -> OutcomeData:
    """RouteLLM CSVs (also the generic CSV format, and other layouts through `ingest`).
    Contaminated prompts listed next to the files are dropped; the group is the subject taken
    from ``mmlu_<subject>.csv``."""
    csv.field_size_limit(sys.maxsize)
    cols = ingest or Ingest()
    models: list[str] | None = None
    rows: list[dict[str, Any]] = []
    dropped = 0
    for path in paths:
        drop = _contaminated(path.parent)
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if cols.prompt not in columns:
                raise DatasetError(
                    f"{path}: no {cols.prompt!r} column (columns: {', '.join(columns)}); "
                    "name the prompt column with --prompt-column"
                )
            found = cols.model_columns(columns, str(path))
            if models is None:
                models = found
            elif found != models:
                raise DatasetError(f"{path}: model columns {found} differ from {models}")
            group = path.stem[5:] if path.stem.startswith("mmlu_") else None
            for line, rec in enumerate(reader, start=2):
                rec["prompt"] = rec[cols.prompt]
                if rec["prompt"] in drop:
                    dropped += 1
                    continue
                rec["_where"] = f"{path}:{line}"
                rec["group"] = rec.get(cols.group) or ""
                if group is not None and not rec.get("group"):
                    rec["group"] = group
                rows.append(rec)
    if not models:
        raise DatasetError(f"{', '.join(map(str, paths))}: no model columns")
    clip = _Clipper(ingest)
    data = _from_rows(
        name or Path(paths[0]).stem,
        models,
        rows,
        quality=lambda r, m: r[m],
        cost=lambda r, m: r.get(cols.cost.format(model=m)),
        out_tokens=lambda r, m: (
            r.get(f"{m}_output_tokens")
            or (_response_tokens(r[f"{m}_response"]) if r.get(f"{m}_response") else None)
        ),
        clip=clip,
    )
    _note_clipped(data, clip)
    if dropped:
        data.notes.append(f"dropped {dropped} contaminated prompt(s)")
    return data


def _response_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def load_llmrouter(path: Path) -> OutcomeData:
    """LLMRouter's ``train.json``; prices from ``models.json`` beside it when present."""
    with _open_text(path) as f:
        raw = json.load(f)
    if not isinstance(raw, list) or not raw or "scores" not in raw[0]:
        raise DatasetError(f"{path}: expected a list of {{question, scores}} objects")
    models = list(raw[0]["scores"])
    rows = [
        {"prompt": r.get("question", r.get("prompt")), "scores": r["scores"], "_where": f"{path}[{i}]"}
        for i, r in enumerate(raw)
    ]
    data = _from_rows(path.stem, models, rows, quality=lambda r, m: r["scores"][m])
    data.name = "llmrouter" if path.name == "train.json" else path.stem
    models_file = path.parent / "models.json"
    if models_file.exists():
        data = with_prices(data, read_prices(models_file))
    return data


def _note_clipped(data: OutcomeData, clip: _Clipper) -> None:
    if clip.clipped:
        lo, hi = clip.range  # type: ignore[misc]
        message = f"{data.name}: {clip.clipped} quality value(s) outside {lo:g}..{hi:g} clipped to the range"
        log.warning(message)
        data.notes.append(f"warning: {message}")


def load_jsonl(path: Path, ingest: Ingest | None = None) -> OutcomeData:
    """Generic JSONL; with `ingest`, the prompt under another key and model scores either in
    ``scores`` or as top-level keys (`ingest.models`)."""
    cols = ingest or Ingest()
    rows: list[dict[str, Any]] = []
    models: list[str] | None = None
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or cols.prompt not in rec:
                raise DatasetError(f"{path}:{line_no}: expected an object with {cols.prompt!r} and 'scores'")
            if not isinstance(rec.get("scores"), dict):
                if not cols.models:
                    raise DatasetError(
                        f"{path}:{line_no}: no 'scores' object; name the score keys with --model-columns"
                    )
                rec["scores"] = {m: rec.get(m) for m in cols.models}
            if models is None:
                models = list(cols.models or [m for m in rec["scores"] if m not in cols.ignore])
            rec["prompt"] = rec[cols.prompt]
            rec["group"] = rec.get(cols.group) or ""
            rec["_where"] = f"{path}:{line_no}"
            rows.append(rec)
    if not rows or not models:
        raise DatasetError(f"{path}: no rows")
    name = path.name.split(".")[0]
    clip = _Clipper(ingest)
    data = _from_rows(
        name,
        models,
        rows,
        quality=lambda r, m: r["scores"][m],
        cost=lambda r, m: (r.get("costs") or {}).get(m),
        out_tokens=lambda r, m: (r.get("output_tokens") or {}).get(m),
        clip=clip,
    )
    _note_clipped(data, clip)
    return data


def _from_rows(
    name: str,
    models: list[str],
    rows: list[dict[str, Any]],
    quality: Any,
    cost: Any = None,
    out_tokens: Any = None,
    clip: Any = None,
) -> OutcomeData:
    n, m = len(rows), len(models)
    value_of = clip or _quality_value
    q = np.zeros((n, m))
    c = np.full((n, m), np.nan)
    t = np.full((n, m), np.nan)
    groups: list[str] = []
    for i, r in enumerate(rows):
        for j, model in enumerate(models):
            try:
                raw = quality(r, model)
            except KeyError:
                raise DatasetError(f"{r['_where']}: no score for model {model!r}") from None
            q[i, j] = value_of(raw, f"{r['_where']} ({model})")
            if cost is not None and (v := cost(r, model)) not in (None, ""):
                c[i, j] = float(v)
            if out_tokens is not None and (v := out_tokens(r, model)) not in (None, ""):
                t[i, j] = float(v)
        groups.append(str(r.get("group") or ""))
    has_cost = not np.isnan(c).any()
    if not has_cost and not np.isnan(c).all():
        raise DatasetError(f"{name}: costs given for some calls but not all")
    data = OutcomeData(
        name=name,
        prompts=[str(r["prompt"]) for r in rows],
        models=models,
        quality=q,
        cost=c if has_cost else _share_cost(q, models),
        groups=groups if any(groups) else None,
        output_tokens=None if np.isnan(t).all() else np.nan_to_num(t, nan=DEFAULT_OUTPUT_TOKENS),
        cost_unit="$" if has_cost else "calls",
    )
    return data


def _share_cost(quality: np.ndarray, models: list[str]) -> np.ndarray:
    """Without prices: two models cost 0 (weak) and 1 (strong), so cost is the strong share;
    more models cost 1 each (cost then counts calls)."""
    n, m = quality.shape
    if m != 2:
        return np.ones((n, m))
    strong = int(np.argmax(quality.mean(axis=0)))
    cost = np.zeros((n, m))
    cost[:, strong] = 1.0
    return cost


def read_prices(path: Path) -> dict[str, tuple[float, float]]:
    """``{model: {input_price, output_price}}`` in $ per million tokens (LLMRouter's
    ``models.json`` has this shape), or ``{model: [input, output]}``."""
    with path.open(encoding="utf-8") as f:
        raw = json.load(f)
    out: dict[str, tuple[float, float]] = {}
    for model, value in raw.items():
        if isinstance(value, dict):
            out[model] = (float(value["input_price"]), float(value["output_price"]))
        else:
            out[model] = (float(value[0]), float(value[1]))
    return out


def estimate_prompt_tokens(prompt: str) -> int:
    return -(-len(prompt) // CHARS_PER_TOKEN)


def with_prices(data: OutcomeData, prices: dict[str, tuple[float, float]]) -> OutcomeData:
    """Cost every call from list prices: prompt tokens estimated from characters, output
    tokens as recorded (else `DEFAULT_OUTPUT_TOKENS`)."""
    missing = [m for m in data.models if m not in prices]
    if missing:
        raise DatasetError(f"{data.name}: no price for {', '.join(missing)}")
    out = data.subset(np.arange(len(data)))
    tin = np.array([estimate_prompt_tokens(p) for p in data.prompts], dtype=np.float64)
    tout = (
        data.output_tokens
        if data.output_tokens is not None
        else np.full((len(data), len(data.models)), float(DEFAULT_OUTPUT_TOKENS))
    )
    pin = np.array([prices[m][0] for m in data.models])
    pout = np.array([prices[m][1] for m in data.models])
    out.cost = (tin[:, None] * pin[None, :] + tout * pout[None, :]) / 1e6
    out.prices = {m: prices[m] for m in data.models}
    out.cost_unit = "$"
    return out


# --------------------------------------------------------------------------- bundled copies


def bundled_dir() -> Path:
    return Path(str(resources.files("pointsman") / "data" / "outcomes"))


def load_bundled(name: str) -> OutcomeData:
    folder = bundled_dir()
    manifest = json.loads((folder / "datasets.json").read_text(encoding="utf-8"))
    if name not in manifest["datasets"]:
        raise DatasetError(f"no bundled dataset {name!r} (have: {', '.join(manifest['datasets'])})")
    meta = manifest["datasets"][name]
    data = load_jsonl(folder / meta["file"])
    data.name = name
    if meta.get("strong"):
        data.strong, data.weak = meta["strong"], meta["weak"]
    if meta.get("prices") and meta.get("cost") == "prices":
        data = with_prices(data, {m: tuple(p) for m, p in meta["prices"].items()})
    elif meta.get("prices"):
        data.prices = {m: tuple(p) for m, p in meta["prices"].items()}
    data.notes.extend(meta.get("notes", []))
    return data


def write_jsonl(data: OutcomeData, path: Path, keep_output_tokens: bool = True) -> None:
    """Write the generic JSONL format (gzip'd when the name ends in .gz), compactly."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, prompt in enumerate(data.prompts):
            rec: dict[str, Any] = {"prompt": prompt}
            if data.groups is not None and data.groups[i]:
                rec["group"] = data.groups[i]
            rec["scores"] = {m: _compact(data.quality[i, j]) for j, m in enumerate(data.models)}
            if keep_output_tokens and data.output_tokens is not None:
                rec["output_tokens"] = {m: int(data.output_tokens[i, j]) for j, m in enumerate(data.models)}
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def _compact(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


# Public list prices of the time, $ per million tokens (input, output); RouteLLM's data has none.
ROUTELLM_PRICES = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
    "gpt-4-1106-preview": (10.0, 30.0),
}


def build_bundle(shared: Path, out: Path) -> dict[str, Any]:
    """Derive the compact bundled copies from the shared data folder (a maintainer step)."""
    out.mkdir(parents=True, exist_ok=True)
    strong, weak = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
    routellm_source = "lm-sys/RouteLLM, commit 0b64fda, routellm/evals/ (Apache-2.0)"
    llmrouter_source = (
        "ulab-uiuc/LLMRouter, commit 4e7a796, data/dcrouter_preprocessed/train.json and "
        "data/example_data/llm_candidates/default_llm.json (MIT)"
    )
    sets: dict[str, Any] = {}
    mmlu = load_routellm_csvs(sorted((shared / "routellm" / "mmlu").glob("mmlu_*.csv")), "mmlu")
    gsm8k = load_routellm_csvs([shared / "routellm" / "gsm8k" / "gsm8k_responses.csv"], "gsm8k")
    for data in (mmlu, gsm8k):
        write_jsonl(data, out / f"{data.name}.jsonl.gz")
        sets[data.name] = {
            "file": f"{data.name}.jsonl.gz",
            "rows": len(data),
            "models": data.models,
            "strong": strong,
            "weak": weak,
            "cost": "strong_share",
            "prices": {m: list(p) for m, p in ROUTELLM_PRICES.items()},
            "source": routellm_source,
            "licence": "LICENSE-routellm",
            "notes": data.notes,
        }
    router = load_llmrouter(shared / "llmrouter" / "train.json")
    write_jsonl(router, out / "llmrouter.jsonl.gz")
    sets["llmrouter"] = {
        "file": "llmrouter.jsonl.gz",
        "rows": len(router),
        "models": router.models,
        "cost": "prices",
        "prices": {m: list(p) for m, p in router.prices.items()},
        "source": llmrouter_source,
        "licence": "LICENSE-llmrouter",
        "notes": [
            f"cost = list price x (prompt tokens estimated as chars/{CHARS_PER_TOKEN} "
            f"+ {DEFAULT_OUTPUT_TOKENS} output tokens)"
        ],
    }
    manifest = {"datasets": sets}
    (out / "datasets.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name, licence in (("routellm", "routellm/LICENSE"), ("llmrouter", "llmrouter/LICENSE")):
        (out / f"LICENSE-{name}").write_bytes((shared / licence).read_bytes())
    return manifest
