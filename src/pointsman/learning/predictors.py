"""Quality predictors at serving time: numpy only, stored as JSON plus named arrays.

Each predictor maps encoded prompts to an (n, models) array of predicted quality in 0..1. The
learners are trained with scikit-learn (see `training`) and exported to these plain forms; no
pickle is ever written or read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pointsman.learning.encoders import SparseRows


class ArtifactError(ValueError):
    """A router artifact that cannot be read or does not fit what is asked of it."""


@dataclass
class Features:
    """One batch of prompts, encoded by every encoder of an artifact, by block name."""

    dense: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: dict[str, SparseRows] = field(default_factory=dict)

    def __len__(self) -> int:
        for block in self.dense.values():
            return len(block)
        for rows in self.sparse.values():
            return len(rows)
        return 0

    def stack(self, blocks: Sequence[str]) -> np.ndarray:
        """Dense blocks side by side (float64, as the learners saw them)."""
        return np.hstack([self.dense[b].astype(np.float64) for b in blocks])

    def subset(self, index: np.ndarray) -> Features:
        sparse = {}
        for name, rows in self.sparse.items():
            parts = [rows.row(int(i)) for i in index]
            indptr = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])]).astype(np.int64)
            sparse[name] = SparseRows(
                indptr,
                np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32),
                np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32),
                rows.width,
            )
        return Features({k: v[index] for k, v in self.dense.items()}, sparse)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    squashed: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))
    return squashed


class Predictor:
    """Base of the portable predictors; `kind` names the class in the artifact."""

    kind: ClassVar[str]

    def predict(self, features: Features) -> np.ndarray:
        raise NotImplementedError

    def inputs(self) -> set[str]:
        """Names of the encoder blocks this predictor reads."""
        raise NotImplementedError

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON spec, arrays) with array names under `prefix`."""
        raise NotImplementedError

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Predictor:
        raise NotImplementedError


class Standardizer:
    """Column means and scales learned on training features."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        scale = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(scale > 1e-9, scale, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


class LinearPredictor(Predictor):
    """One logistic model per output over dense blocks (standardised, then weighted by
    `dense_scale`) and at most one sparse block; with `link="softmax"`, one multinomial model
    whose outputs sum to 1 (the route gate)."""

    kind = "linear"

    def __init__(
        self,
        dense_blocks: Sequence[str],
        sparse_block: str | None,
        scaler: Standardizer | None,
        dense_scale: float,
        w_dense: np.ndarray,
        w_sparse: np.ndarray | None,
        bias: np.ndarray,
        link: str = "logistic",
    ) -> None:
        if link not in ("logistic", "softmax"):
            raise ArtifactError(f"unknown link {link!r}")
        self.link = link
        self.dense_blocks = list(dense_blocks)
        self.sparse_block = sparse_block
        self.scaler = scaler
        self.dense_scale = dense_scale
        # Held at the precision they are stored in, so a reloaded artifact decides identically.
        self.w_dense = np.asarray(w_dense, dtype=np.float64)
        self.w_sparse = None if w_sparse is None else np.asarray(w_sparse, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float64)

    def dense_input(self, features: Features) -> np.ndarray | None:
        if not self.dense_blocks:
            return None
        x = features.stack(self.dense_blocks)
        if self.scaler is not None:
            x = self.scaler(x)
        return x * self.dense_scale

    def inputs(self) -> set[str]:
        return set(self.dense_blocks) | ({self.sparse_block} if self.sparse_block else set())

    def predict(self, features: Features) -> np.ndarray:
        z = np.tile(self.bias, (len(features), 1)).astype(np.float64)
        x = self.dense_input(features)
        if x is not None:
            z += x @ self.w_dense
        if self.sparse_block is not None and self.w_sparse is not None:
            z += features.sparse[self.sparse_block].dot(self.w_sparse)
        if self.link == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
            return probs
        return _sigmoid(z)

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {f"{prefix}w_dense": self.w_dense, f"{prefix}bias": self.bias}
        if self.w_sparse is not None:
            arrays[f"{prefix}w_sparse"] = self.w_sparse
        if self.scaler is not None:
            arrays[f"{prefix}mean"] = self.scaler.mean
            arrays[f"{prefix}scale"] = self.scaler.scale
        spec = {
            "kind": self.kind,
            "prefix": prefix,
            "dense_blocks": self.dense_blocks,
            "sparse_block": self.sparse_block,
            "dense_scale": self.dense_scale,
            "link": self.link,
        }
        return spec, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LinearPredictor:
        p = spec["prefix"]
        scaler = Standardizer(arrays[f"{p}mean"], arrays[f"{p}scale"]) if f"{p}mean" in arrays else None
        return cls(
            spec["dense_blocks"],
            spec.get("sparse_block"),
            scaler,
            float(spec.get("dense_scale", 1.0)),
            arrays[f"{p}w_dense"],
            arrays.get(f"{p}w_sparse"),
            arrays[f"{p}bias"],
            spec.get("link", "logistic"),
        )


class KnnPredictor(Predictor):
    """Mean outcome of the k most similar training prompts by cosine similarity on the first
    `dims` columns of a dense block (WordLlama is trained so that its leading dimensions are an
    embedding of their own), weighted by similarity.

    Keys are kept as int8 with one scale: a quarter of float32's size, and a query reads a
    quarter of the memory, which is what a kNN lookup costs on a busy machine.
    """

    kind = "knn"

    def __init__(
        self,
        block: str,
        keys: np.ndarray,
        values: np.ndarray,
        k: int,
        dims: int | None = None,
        scale: float | None = None,
    ) -> None:
        self.block = block
        self.dims = int(dims or keys.shape[1])
        if scale is None:
            unit = _unit_rows(np.asarray(keys, dtype=np.float64)[:, : self.dims])
            scale = 127.0 / (float(np.abs(unit).max()) or 1.0)
            keys = np.round(unit * scale).astype(np.int8)
        self.scale = float(scale)
        self.quantized = np.ascontiguousarray(keys, dtype=np.int8)
        self.keys = self.quantized.astype(np.float32) / np.float32(self.scale)
        self.values = np.asarray(values, dtype=np.float16).astype(np.float32)
        self.k = min(k, len(self.keys))

    def inputs(self) -> set[str]:
        return {self.block}

    def predict(self, features: Features) -> np.ndarray:
        x = _unit_rows(features.dense[self.block][:, : self.dims].astype(np.float32))
        sims = x @ self.keys.T
        k = self.k
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sims, top, axis=1)
        w = np.maximum(s, 0.0) + 1e-6
        out: np.ndarray = np.einsum("nk,nkm->nm", w, self.values[top]) / w.sum(axis=1, keepdims=True)
        return out.astype(np.float64)

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "prefix": prefix,
            "block": self.block,
            "k": self.k,
            "dims": self.dims,
            "scale": self.scale,
        }
        arrays: dict[str, np.ndarray] = {
            f"{prefix}keys": self.quantized,
            f"{prefix}values": self.values.astype(np.float16),
        }
        return spec, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> KnnPredictor:
        p = spec["prefix"]
        return cls(
            spec["block"],
            arrays[f"{p}keys"],
            arrays[f"{p}values"],
            int(spec["k"]),
            int(spec["dims"]),
            float(spec["scale"]),
        )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class ClusterPredictor(Predictor):
    """A cluster prior: each prompt takes the mean outcomes of the training prompts in its
    nearest cluster (cosine similarity to unit centroids on one block, dense or sparse).

    Clusters are found without labels (k-means at training), so a family of prompts that shares
    a template (logic grids, code, maths word problems) shares a row; each row is shrunk toward
    the overall mean by the cluster's size (`strength` pseudo-prompts), so a small cluster says
    little. Serving is one matrix product and a table lookup.
    """

    kind = "cluster"

    def __init__(self, block: str, centroids: np.ndarray, table: np.ndarray, sparse: bool = False) -> None:
        if len(centroids) != len(table):
            raise ArtifactError("a cluster predictor needs one table row per centroid")
        self.block = block
        self.sparse = bool(sparse)
        # Held at the precision they are stored in, so a reloaded artifact decides identically.
        self.centroids = np.asarray(centroids, dtype=np.float16)
        self.table = np.asarray(table, dtype=np.float64)
        self._by_column = np.ascontiguousarray(self.centroids.T, dtype=np.float32)  # (dim, k)

    @classmethod
    def from_labels(
        cls,
        block: str,
        centroids: np.ndarray,
        labels: np.ndarray,
        quality: np.ndarray,
        strength: float = 10.0,
        sparse: bool = False,
    ) -> ClusterPredictor:
        """Table rows from training prompts' cluster labels (`centroids`: unit rows): (sum of
        outcomes + strength x overall mean) / (cluster size + strength)."""
        quality = np.asarray(quality, dtype=np.float64)
        overall = quality.mean(axis=0)
        k = len(centroids)
        sums = np.zeros((k, quality.shape[1]))
        np.add.at(sums, labels, quality)
        sizes = np.bincount(labels, minlength=k).astype(np.float64)[:, None]
        table = (sums + strength * overall) / (sizes + strength)
        return cls(block, centroids, table, sparse)

    def assign(self, features: Features) -> np.ndarray:
        """Index of each prompt's nearest centroid."""
        if self.sparse:
            sims = features.sparse[self.block].dot(self._by_column)
        else:
            sims = features.dense[self.block].astype(np.float32) @ self._by_column
        nearest: np.ndarray = np.argmax(sims, axis=1)  # a row's own norm does not change its argmax
        return nearest

    def inputs(self) -> set[str]:
        return {self.block}

    def predict(self, features: Features) -> np.ndarray:
        table_rows: np.ndarray = self.table[self.assign(features)]
        return table_rows

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        spec = {"kind": self.kind, "prefix": prefix, "block": self.block, "sparse": self.sparse}
        return spec, {f"{prefix}centroids": self.centroids, f"{prefix}table": self.table}

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ClusterPredictor:
        p = spec["prefix"]
        return cls(spec["block"], arrays[f"{p}centroids"], arrays[f"{p}table"], bool(spec.get("sparse")))


class TreesPredictor(Predictor):
    """Gradient-boosted regression trees, one ensemble per output, stored as complete binary
    trees of equal depth so that all trees are walked at once with a few numpy operations.

    Node ``t, i`` sends a row left when ``x[feature] <= threshold`` (scikit-learn's rule);
    shallower leaves are padded with always-left nodes (threshold +inf).
    """

    kind = "trees"

    def __init__(
        self,
        blocks: Sequence[str],
        depth: int,
        feature: np.ndarray,
        threshold: np.ndarray,
        leaf: np.ndarray,
        output: np.ndarray,
        baseline: np.ndarray,
    ) -> None:
        self.blocks = list(blocks)
        self.depth = depth
        self.feature = np.asarray(feature, dtype=np.int32)  # (T, 2^depth - 1)
        self.threshold = np.asarray(threshold, dtype=np.float64)  # (T, 2^depth - 1)
        self.leaf = np.asarray(leaf, dtype=np.float64)  # (T, 2^depth)
        self.output = np.asarray(output, dtype=np.int32)  # (T,) which output each tree adds to
        self.baseline = np.asarray(baseline, dtype=np.float64)  # (outputs,)

    def inputs(self) -> set[str]:
        return set(self.blocks)

    def predict(self, features: Features) -> np.ndarray:
        clipped: np.ndarray = np.clip(self.raw(features), 0.0, 1.0)
        return clipped

    def raw(self, features: Features) -> np.ndarray:
        """Sum of baseline and leaves, before clipping to 0..1."""
        x = features.stack(self.blocks)
        n, t = len(x), len(self.feature)
        node = np.zeros((n, t), dtype=np.int64)
        trees = np.arange(t)
        for _ in range(self.depth):
            f = self.feature[trees, node]
            thr = self.threshold[trees, node]
            right = np.take_along_axis(x, f, axis=1) > thr
            node = 2 * node + 1 + right
        leaf_index = node - (2**self.depth - 1)
        values = self.leaf[trees, leaf_index]  # (n, T)
        out = np.tile(self.baseline, (n, 1))
        for j in range(len(self.baseline)):
            out[:, j] += values[:, self.output == j].sum(axis=1)
        return out

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        spec = {"kind": self.kind, "prefix": prefix, "blocks": self.blocks, "depth": self.depth}
        arrays = {
            f"{prefix}feature": self.feature.astype(np.int16 if self.feature.max() < 32767 else np.int32),
            f"{prefix}threshold": self.threshold,
            f"{prefix}leaf": self.leaf,
            f"{prefix}output": self.output.astype(np.int16),
            f"{prefix}baseline": self.baseline,
        }
        return spec, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> TreesPredictor:
        p = spec["prefix"]
        return cls(
            spec["blocks"],
            int(spec["depth"]),
            arrays[f"{p}feature"],
            arrays[f"{p}threshold"],
            arrays[f"{p}leaf"],
            arrays[f"{p}output"],
            arrays[f"{p}baseline"],
        )


class MlpPredictor(Predictor):
    """A small multilayer perceptron (ReLU hidden layers, linear output clipped to 0..1)."""

    kind = "mlp"

    def __init__(
        self,
        blocks: Sequence[str],
        scaler: Standardizer,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
    ) -> None:
        self.blocks = list(blocks)
        self.scaler = scaler
        self.weights = [np.asarray(w, dtype=np.float32).astype(np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32).astype(np.float64) for b in biases]

    def inputs(self) -> set[str]:
        return set(self.blocks)

    def predict(self, features: Features) -> np.ndarray:
        h = self.scaler(features.stack(self.blocks))
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                h = np.maximum(h, 0.0)
        clipped: np.ndarray = np.clip(h, 0.0, 1.0)
        return clipped

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"{prefix}mean": self.scaler.mean, f"{prefix}scale": self.scaler.scale}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"{prefix}w{i}"] = w.astype(np.float32)
            arrays[f"{prefix}b{i}"] = b.astype(np.float32)
        spec = {"kind": self.kind, "prefix": prefix, "blocks": self.blocks, "layers": len(self.weights)}
        return spec, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> MlpPredictor:
        p = spec["prefix"]
        layers = int(spec["layers"])
        return cls(
            spec["blocks"],
            Standardizer(arrays[f"{p}mean"], arrays[f"{p}scale"]),
            [arrays[f"{p}w{i}"] for i in range(layers)],
            [arrays[f"{p}b{i}"] for i in range(layers)],
        )


class EnsemblePredictor(Predictor):
    """Weighted mean of members' predicted quality."""

    kind = "ensemble"

    def __init__(self, members: Sequence[Predictor], weights: Sequence[float]) -> None:
        self.members = list(members)
        total = float(sum(weights))
        # Weights that already sum to 1 are kept as they are: dividing again by a sum of
        # 0.9999999999999999 would change the stored weights, and a reloaded router with them.
        scale = 1.0 if abs(total - 1.0) < 1e-9 else total
        self.weights = [float(w) / scale for w in weights]

    def inputs(self) -> set[str]:
        return set().union(*(m.inputs() for m in self.members))

    def predict(self, features: Features) -> np.ndarray:
        out = None
        for member, w in zip(self.members, self.weights, strict=True):
            part = w * member.predict(features)
            out = part if out is None else out + part
        assert out is not None
        return out

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        specs, arrays = [], {}
        for i, member in enumerate(self.members):
            spec, arr = member.export(f"{prefix}m{i}_")
            specs.append(spec)
            arrays.update(arr)
        return {"kind": self.kind, "members": specs, "weights": self.weights}, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EnsemblePredictor:
        return cls([load_predictor(s, arrays) for s in spec["members"]], spec["weights"])


class GatedPredictor(Predictor):
    """Routes with experts: a softmax gate gives each prompt's probability of belonging to
    each route (e.g. the dataset a prompt resembles) and the prediction is the experts'
    predictions weighted by it."""

    kind = "gated"

    def __init__(self, gate: LinearPredictor, experts: Sequence[Predictor], routes: Sequence[str]) -> None:
        if len(experts) != len(routes):
            raise ArtifactError("a gated predictor needs one expert per route")
        self.gate = gate
        self.experts = list(experts)
        self.routes = list(routes)

    def route_weights(self, features: Features) -> np.ndarray:
        return self.gate.predict(features)

    def inputs(self) -> set[str]:
        return self.gate.inputs().union(*(e.inputs() for e in self.experts))

    def predict(self, features: Features) -> np.ndarray:
        return self.predict_with_routes(features)[0]

    def predict_with_routes(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """(predicted quality, index of each prompt's most likely route)."""
        g = self.route_weights(features)
        out = None
        for r, expert in enumerate(self.experts):
            part = g[:, r : r + 1] * expert.predict(features)
            out = part if out is None else out + part
        assert out is not None
        return out, g.argmax(axis=1)

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        gate_spec, arrays = self.gate.export(f"{prefix}gate_")
        specs = []
        for i, expert in enumerate(self.experts):
            spec, arr = expert.export(f"{prefix}e{i}_")
            specs.append(spec)
            arrays.update(arr)
        return {"kind": self.kind, "routes": self.routes, "gate": gate_spec, "experts": specs}, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> GatedPredictor:
        gate = LinearPredictor.load(spec["gate"], arrays)
        return cls(gate, [load_predictor(s, arrays) for s in spec["experts"]], spec["routes"])


class TaskPredictor(Predictor):
    """A task signal: a supervised classifier (softmax over the task labels of the training
    data: MMLU subjects, a dataset's task column, dataset names) gives each prompt's probability
    of each task, and the prediction is those probabilities times per-task mean outcomes (each
    shrunk toward the overall mean by the task's size)."""

    kind = "task"

    def __init__(self, gate: LinearPredictor, table: np.ndarray, tasks: Sequence[str]) -> None:
        if len(table) != len(tasks):
            raise ArtifactError("a task predictor needs one table row per task")
        self.gate = gate
        self.table = np.asarray(table, dtype=np.float64)
        self.tasks = list(tasks)

    def inputs(self) -> set[str]:
        return self.gate.inputs()

    def task_probabilities(self, features: Features) -> np.ndarray:
        return self.gate.predict(features)

    def predict(self, features: Features) -> np.ndarray:
        out: np.ndarray = self.task_probabilities(features) @ self.table
        return out

    def export(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        gate_spec, arrays = self.gate.export(f"{prefix}gate_")
        arrays[f"{prefix}table"] = self.table
        return {"kind": self.kind, "prefix": prefix, "tasks": self.tasks, "gate": gate_spec}, arrays

    @classmethod
    def load(cls, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> TaskPredictor:
        gate = LinearPredictor.load(spec["gate"], arrays)
        return cls(gate, arrays[f"{spec['prefix']}table"], spec["tasks"])


PREDICTORS: dict[str, type[Predictor]] = {
    c.kind: c
    for c in (
        TaskPredictor,
        LinearPredictor,
        KnnPredictor,
        ClusterPredictor,
        TreesPredictor,
        MlpPredictor,
        EnsemblePredictor,
        GatedPredictor,
    )
}


def load_predictor(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Predictor:
    cls = PREDICTORS.get(spec.get("kind", ""))
    if cls is None:
        raise ArtifactError(
            f"unknown predictor kind {spec.get('kind')!r} (expected one of: {', '.join(PREDICTORS)})"
        )
    try:
        return cls.load(spec, arrays)
    except KeyError as exc:
        raise ArtifactError(f"{spec['kind']} predictor: array {exc} missing from the artifact") from None
