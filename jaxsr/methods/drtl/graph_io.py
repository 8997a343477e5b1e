"""Save / load the distortion knowledge graph: JSON + annotated heatmap PNG."""
from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np

GRAPH_JSON_VERSION = 1


def _as_list(x: Any) -> Any:
    return None if x is None else np.asarray(x, np.float64).tolist()


def graph_matrix(aux_aux: Any, target_aux: Any) -> np.ndarray:
    """`(K+1, K+1)` matrix: auxiliary block `aux_aux`, last row/col `target_aux`, corner 1."""
    a = np.asarray(aux_aux, np.float64)
    t = np.asarray(target_aux, np.float64)
    k = a.shape[0]
    if a.shape != (k, k) or t.shape != (k,):
        raise ValueError(f"graph_matrix: aux_aux must be (K, K) and target_aux (K,), got "
                         f"{a.shape} and {t.shape}.")
    m = np.ones((k + 1, k + 1))
    m[:k, :k] = a
    m[k, :k] = t
    m[:k, k] = t
    return m


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def graph_to_dict(graph: dict, task_names: Sequence[str], weights: Any = None, *,
                  tau: float | None = None, mode: str | None = None,
                  target_name: str = "target") -> dict:
    """JSON-able dict of the graph (names, aux_aux, target_aux, weights, tau, mode)."""
    aux = np.asarray(graph["aux_aux"])
    names = [str(n) for n in task_names]
    if len(names) != aux.shape[0]:
        raise ValueError(f"save_graph: {len(names)} task names for a graph with K={aux.shape[0]} "
                         "auxiliary nodes; pass one name per memory-bank row.")
    if weights is not None and np.asarray(weights).shape != (len(names),):
        raise ValueError(f"save_graph: weights have shape {np.asarray(weights).shape}, expected "
                         f"({len(names)},).")
    return {"version": GRAPH_JSON_VERSION, "task_names": names, "target_name": target_name,
            "aux_aux": _as_list(graph["aux_aux"]), "target_aux": _as_list(graph["target_aux"]),
            "weights": _as_list(weights), "tau": None if tau is None else float(tau),
            "mode": mode}


def save_graph(path_json: str | os.PathLike, path_png: str | os.PathLike | None, graph: dict,
               task_names: Sequence[str], weights: Any = None, *, tau: float | None = None,
               mode: str | None = None, target_name: str = "target") -> dict:
    """Write the knowledge graph as JSON and (if `path_png`) an annotated heatmap.

    Args:
      graph: `knowledge_graph(...)` output (`aux_aux` `(K, K)`, `target_aux` `(K,)`).
      task_names: K auxiliary distortion names (memory-bank row order).
      weights: `(K,)` relation weights used for training (optional).
      tau, mode: relation temperature and mode, recorded in the JSON.
    Returns:
      the dict written to JSON.
    """
    d = graph_to_dict(graph, task_names, weights, tau=tau, mode=mode, target_name=target_name)
    _atomic_write(pathlib.Path(path_json), json.dumps(d, indent=2).encode())
    if path_png is not None:
        save_heatmap(path_png, d)
    return d


def load_graph(path_json: str | os.PathLike) -> dict:
    """Read a graph JSON written by `save_graph`; matrices come back as float64 numpy arrays."""
    p = pathlib.Path(path_json)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"load_graph: cannot read {p}: {e}. Re-create it with save_graph.") from e
    for k in ("aux_aux", "target_aux", "weights"):
        if d.get(k) is not None:
            d[k] = np.asarray(d[k], np.float64)
    return d


def save_heatmap(path_png: str | os.PathLike, graph_dict: dict) -> None:
    """`(K+1) x (K+1)` cosine heatmap (aux nodes + target), labelled, annotated, with colorbar."""
    # Figure + its Agg canvas directly: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(graph_dict["task_names"]) + [graph_dict.get("target_name", "target")]
    m = graph_matrix(graph_dict["aux_aux"], graph_dict["target_aux"])
    n = len(names)
    size = max(4.0, 0.6 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(m[i, j]) > 0.6 else "black")
    ax.axhline(n - 1.5, color="k", lw=1.0)
    ax.axvline(n - 1.5, color="k", lw=1.0)
    title = "Distortion knowledge graph"
    if graph_dict.get("mode"):
        title += f" (mode={graph_dict['mode']}"
        title += f", tau={graph_dict['tau']:g})" if graph_dict.get("tau") is not None else ")"
    ax.set_title(title, fontsize=9)
    w = graph_dict.get("weights")
    if w is not None:
        ax.set_xlabel("weights: " + ", ".join(f"{a}={b:.2f}" for a, b in
                                              zip(graph_dict["task_names"], np.asarray(w))),
                      fontsize=7, wrap=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write(pathlib.Path(path_png), buf.getvalue())
