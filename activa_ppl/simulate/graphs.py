"""Random gene-regulatory graphs for the SERGIO simulator (paper Appendix C.2).

Three sources of DAGs over ``d`` genes, all returned as ``(d, d)`` bool adjacency matrices with
``adjacency[a, b]`` iff gene ``a`` regulates gene ``b``:

* :func:`erdos_renyi_dag` -- avici's ``ErdosRenyi``: each pair below the diagonal is an edge with
  probability ``p = min(edges_per_var * d / (d (d - 1) / 2), 0.99)``, then the genes are randomly
  permuted;
* :func:`scale_free_dag` -- avici's ``ScaleFreeTranspose``: a directed Barabási--Albert graph
  (every new gene links to ``m`` earlier genes chosen with probability proportional to
  ``in_degree ** power + 1``), transposed so that early "hub" genes regulate many later genes
  (power-law out-degree), then randomly permuted;
* :func:`extract_module` -- random ``d``-gene modules of a real regulatory network (E. coli,
  S. cerevisiae) by the greedy modularity extraction of Marbach et al. (2009), as in avici's
  ``Ecoli``/``Yeast`` graph models. The network is read by :func:`load_network` from an
  edge-list file: the paper's two networks ship with the package
  (:data:`SHIPPED_NETWORKS`, ``activa_ppl/simulate/networks/`` with their source, citation and
  licence; :func:`shipped_network_path`), or any user-supplied file.

All functions draw from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from pathlib import Path

import numpy as np

__all__ = [
    "SHIPPED_NETWORKS",
    "RegulatoryNetwork",
    "break_cycles_randomly",
    "erdos_renyi_dag",
    "extract_module",
    "graph_levels",
    "load_network",
    "longest_path_lengths",
    "portable_network_path",
    "scale_free_dag",
    "shipped_network_path",
]

#: The regulatory networks shipped in ``activa_ppl/simulate/networks/`` (the paper's E. coli and
#: S. cerevisiae networks; README.md there states source, citation and licence): name -> file.
SHIPPED_NETWORKS = {"ecoli": "ecoli_transcriptional_network_regulonDB_6_7.tsv",
                    "yeast": "yeast_transcriptional_network_Balaji2006.tsv"}
_NETWORK_DIR = Path(__file__).resolve().parent / "networks"


def shipped_network_path(name: str) -> Path:
    """Path of the shipped network ``name`` (a key of :data:`SHIPPED_NETWORKS`).

    Raises:
        ValueError: an unknown name.
    """
    if name not in SHIPPED_NETWORKS:
        raise ValueError(f"unknown network {name!r}; shipped networks: {sorted(SHIPPED_NETWORKS)}")
    return _NETWORK_DIR / SHIPPED_NETWORKS[name]


def portable_network_path(path: str | os.PathLike) -> str:
    """``path`` as recorded in dataset metadata: a shipped network as
    ``activa_ppl/simulate/networks/FILE`` (no machine path), any other file as its absolute path."""
    resolved = Path(path).resolve()
    if resolved.parent == _NETWORK_DIR and resolved.name in SHIPPED_NETWORKS.values():
        return f"activa_ppl/simulate/networks/{resolved.name}"
    return str(resolved)


def _check_num_genes(num_genes: int, minimum: int = 1) -> int:
    if isinstance(num_genes, bool) or not isinstance(num_genes, (int, np.integer)) or num_genes < minimum:
        raise ValueError(f"num_genes must be an int >= {minimum}, got {num_genes!r}")
    return int(num_genes)


def _random_permutation(adjacency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relabel the genes of ``adjacency: (d, d)`` by a uniformly random permutation."""
    perm = rng.permutation(adjacency.shape[0])
    return adjacency[np.ix_(perm, perm)]


def erdos_renyi_dag(num_genes: int, edges_per_var: float, rng: np.random.Generator) -> np.ndarray:
    """Erdős–Rényi DAG with ``edges_per_var * d`` expected edges (avici ``ErdosRenyi``).

    Every unordered pair of genes is an edge with probability
    ``p = min(edges_per_var * d / (d (d - 1) / 2), 0.99)``, oriented along a uniformly random
    topological order.

    Returns:
        adjacency: (d, d) bool, acyclic, zero diagonal.
    """
    d = _check_num_genes(num_genes)
    if not edges_per_var >= 0:
        raise ValueError(f"edges_per_var must be >= 0, got {edges_per_var!r}")
    pairs = d * (d - 1) / 2
    p = min(edges_per_var * d / pairs, 0.99) if pairs else 0.0
    lower = np.tril(rng.random((d, d)) < p, k=-1)  # edge a -> b only for b < a: acyclic
    return _random_permutation(lower, rng)


def scale_free_dag(num_genes: int, edges_per_var: int, rng: np.random.Generator,
                   power: float = 1.0) -> np.ndarray:
    """Scale-free DAG with power-law out-degree (avici ``ScaleFreeTranspose``).

    Genes arrive one at a time; gene ``i`` picks ``min(m, i)`` distinct earlier genes ``j`` one
    after another, each with probability proportional to ``indeg(j) ** power + 1`` (igraph's
    ``Barabasi(directed=True, power=power, zero_appeal=1)`` without multi-edges), where
    ``indeg`` counts the links gene ``j`` has received so far. Every link is then reversed to
    ``j -> i`` (so genes picked often become regulators of many genes) and the genes are
    randomly permuted.

    Returns:
        adjacency: (d, d) bool, acyclic, zero diagonal.
    """
    d = _check_num_genes(num_genes)
    if isinstance(edges_per_var, bool) or int(edges_per_var) != edges_per_var or edges_per_var < 0:
        raise ValueError(f"edges_per_var must be a non-negative integer for scale-free graphs, got {edges_per_var!r}")
    if not power >= 0:
        raise ValueError(f"power must be >= 0, got {power!r}")
    m = int(edges_per_var)
    adjacency = np.zeros((d, d), dtype=bool)
    received = np.zeros(d)  # links received so far (in-degree before the transpose)
    for new in range(1, d):
        weights = received[:new] ** power + 1.0
        for _ in range(min(m, new)):
            probs = weights / weights.sum()
            old = int(rng.choice(new, p=probs))
            adjacency[old, new] = True  # transposed Barabási edge: old regulates new
            weights[old] = 0.0  # no multi-edges
        received[:new] += adjacency[:new, new]
    return _random_permutation(adjacency, rng)


def longest_path_lengths(adjacency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest-path layering of a DAG ``adjacency: (..., d, d)``.

    Returns:
        (depth, level): each (..., d) int32. ``depth[v]`` is the length of the longest directed
        path ending in ``v`` (0 for genes without regulators); ``level[v]`` is the length of the
        longest path starting in ``v`` (0 for genes without targets; SERGIO's "level", which
        fixes how many steps a gene is simulated).
    """
    adj = np.asarray(adjacency).astype(bool)
    d = adj.shape[-1]
    depth = np.zeros(adj.shape[:-1], dtype=np.int32)
    level = np.zeros(adj.shape[:-1], dtype=np.int32)
    for _ in range(d):
        # depth[v] = max_{u -> v} depth[u] + 1; level[u] = max_{u -> v} level[v] + 1
        depth = np.max(np.where(adj, depth[..., :, None] + 1, 0), axis=-2).astype(np.int32)
        level = np.max(np.where(adj, level[..., None, :] + 1, 0), axis=-1).astype(np.int32)
    return depth, level


def graph_levels(adjacency: np.ndarray) -> np.ndarray:
    """SERGIO levels ``(..., d)``: longest path to a gene without targets (see :func:`longest_path_lengths`)."""
    return longest_path_lengths(adjacency)[1]


def break_cycles_randomly(adjacency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make ``adjacency: (d, d)`` acyclic like avici's ``_break_cycles_randomly``.

    A depth-first search visits start genes in a random order (successors in increasing index
    order) and deletes every back edge it meets (the edge that closes a cycle). Consumes one
    ``rng.permutation(d)``.

    Returns:
        (d, d) bool DAG, a subgraph of the input (the input is not modified).
    """
    adj = np.array(adjacency, dtype=bool)
    d = adj.shape[0]
    color = np.zeros(d, dtype=np.int8)  # 0 unvisited, 1 on the DFS path, 2 finished
    for root in rng.permutation(d):
        if color[root]:
            continue
        color[root] = 1
        stack = [(int(root), iter(np.flatnonzero(adj[root]).tolist()))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                color[node] = 2
                stack.pop()
            elif color[child] == 1:
                adj[node, child] = False  # back edge closes a cycle
            elif color[child] == 0:
                color[child] = 1
                stack.append((child, iter(np.flatnonzero(adj[child]).tolist())))
    return adj


@dataclasses.dataclass(frozen=True, eq=False)
class RegulatoryNetwork:
    """A directed source network read by :func:`load_network`.

    Attributes:
        adjacency: (n, n) bool, ``adjacency[a, b]`` iff gene ``a`` regulates gene ``b``
            (self-loops removed).
        genes: length-n tuple of gene names, sorted; row/column ``i`` is ``genes[i]``.
        path: the file it was read from.
        sha256: SHA-256 of the file contents (recorded in dataset metadata).
    """

    adjacency: np.ndarray
    genes: tuple[str, ...]
    path: str
    sha256: str

    @property
    def num_genes(self) -> int:
        return len(self.genes)

    # Derived arrays are computed once per network (module extraction reuses them).
    @functools.cached_property
    def regulators(self) -> np.ndarray:
        """(r,) int indices of genes with at least one target (transcription factors)."""
        return np.flatnonzero(self.adjacency.any(axis=1))

    @functools.cached_property
    def skeleton(self) -> np.ndarray:
        """(n, n) bool undirected skeleton ``A | A^T``."""
        return self.adjacency | self.adjacency.T

    @functools.cached_property
    def degree(self) -> np.ndarray:
        """(n,) float64 degrees in the undirected skeleton."""
        return self.skeleton.sum(axis=1).astype(np.float64)


def load_network(path: str | os.PathLike) -> RegulatoryNetwork:
    """Read a regulatory network from a tab- or whitespace-separated edge list.

    Each non-empty line not starting with ``#`` is ``regulator target [more columns]``; extra
    columns (e.g. the ``+``/``-`` sign column of the RegulonDB file) are ignored, as in avici,
    which re-samples interaction signs. Self-loops are dropped. This reads the paper's files,
    ``ecoli_transcriptional_network_regulonDB_6_7.tsv`` and
    ``yeast_transcriptional_network_Balaji2006.tsv`` (shipped, :func:`shipped_network_path`).

    Raises:
        ValueError: missing file, a line with fewer than two columns, or fewer than 2 genes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"network file {path!r} does not exist")
    with open(path, "rb") as handle:
        raw = handle.read()
    edges: list[tuple[str, str]] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{path}:{number}: expected 'regulator<TAB>target', got {line!r}")
        edges.append((fields[0], fields[1]))
    genes = tuple(sorted({g for edge in edges for g in edge}))
    if len(genes) < 2:
        raise ValueError(f"network file {path!r} has {len(genes)} genes; need at least 2")
    index = {g: i for i, g in enumerate(genes)}
    adjacency = np.zeros((len(genes), len(genes)), dtype=bool)
    for source, target in edges:
        adjacency[index[source], index[target]] = True
    np.fill_diagonal(adjacency, False)
    adjacency.flags.writeable = False
    return RegulatoryNetwork(adjacency=adjacency, genes=genes, path=path,
                             sha256=hashlib.sha256(raw).hexdigest())


def extract_module(network: RegulatoryNetwork, num_genes: int, rng: np.random.Generator, *,
                   topk: float = 0.2, at_least_n_regulators: int = 1,
                   make_acyclic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random ``d``-gene module of ``network`` (Marbach et al. 2009; avici ``_module_extraction``).

    On the undirected skeleton ``A`` (degrees ``k``, ``m`` edges) with modularity matrix
    ``B = A - k k^T / (2m)``: start from a random regulator (a gene with a target); then ``d - 1``
    times, among the neighbours of the current module (all genes outside it if it has none) rank
    each candidate ``n`` by the modularity ``Q`` of the module after adding ``n`` and add a gene
    drawn uniformly from the ``floor(topk * #candidates) + 1`` best. (While the module holds
    fewer than ``at_least_n_regulators`` regulators, only regulators are candidates.) The
    directed edges of ``network`` among the chosen genes form the module; cycles are removed by
    :func:`break_cycles_randomly`, and the genes are randomly permuted.

    With the membership vector ``s`` (+1 inside, -1 outside), ``4m Q = s^T B s`` and adding ``n``
    changes it by ``4 (B s)_n + 4 B_nn``, so candidates are ranked by ``(B s)_n + B_nn``, with
    ``B s`` updated in O(n) per added gene (avici evaluates the same quantity in O(n) per
    candidate). Ties are broken by gene index (avici: by Python set order).

    Returns:
        (adjacency, genes): (d, d) bool module adjacency and (d,) int indices into
        ``network.genes`` (row ``i`` of the module is gene ``network.genes[genes[i]]``).
    """
    d = _check_num_genes(num_genes, minimum=2)
    n = network.num_genes
    if d >= n:
        raise ValueError(f"num_genes = {d} must be smaller than the network's {n} genes")
    if not 0.0 <= topk <= 1.0:
        raise ValueError(f"topk must lie in [0, 1], got {topk}")
    if not 0 <= at_least_n_regulators < d:
        raise ValueError(f"at_least_n_regulators must lie in [0, num_genes), got {at_least_n_regulators}")
    source = network.adjacency
    regulators = network.regulators
    if at_least_n_regulators and regulators.size < at_least_n_regulators:
        raise ValueError(f"network has {regulators.size} regulators, fewer than at_least_n_regulators")
    skeleton, degree = network.skeleton, network.degree
    two_m = degree.sum()
    if two_m == 0:
        raise ValueError("network has no edges")
    is_regulator = np.zeros(n, dtype=bool)
    is_regulator[regulators] = True

    def modularity_column(j: int) -> np.ndarray:
        """Column j of B = A - k k^T / (2m), (n,)."""
        return skeleton[:, j] - degree * degree[j] / two_m

    seed = int(rng.choice(regulators)) if at_least_n_regulators else int(rng.integers(n))
    in_module = np.zeros(n, dtype=bool)
    in_module[seed] = True
    b_s = 2.0 * modularity_column(seed)  # B s with s = -1 + 2 e_seed (B 1 = 0)
    b_diag = -degree**2 / two_m  # B_nn (no self-loops in the skeleton)
    for _ in range(d - 1):
        neighbours = skeleton[in_module].any(axis=0) & ~in_module
        if at_least_n_regulators and is_regulator[in_module].sum() < at_least_n_regulators:
            neighbours &= is_regulator
        if not neighbours.any():
            neighbours = ~in_module
        candidates = np.flatnonzero(neighbours)
        gain = b_s[candidates] + b_diag[candidates]
        order = np.argsort(-gain, kind="stable")
        best = candidates[order[: math.floor(topk * candidates.size) + 1]]
        new = int(rng.choice(best))
        in_module[new] = True
        b_s += 2.0 * modularity_column(new)
    genes = np.flatnonzero(in_module)
    module = source[np.ix_(genes, genes)].copy()
    if make_acyclic:
        module = break_cycles_randomly(module, rng)
    perm = rng.permutation(d)
    return module[np.ix_(perm, perm)], genes[perm]
