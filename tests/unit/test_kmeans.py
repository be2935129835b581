"""pipeline/method/kmeans.py: the bounded seeded sample, the two backends, the chunked assignment, and the stages'
k-means (cluster, merge's parts) fitted on a sample and run on faiss."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, raw_params, section
from pipeline.config import ConfigError, parse_params
from pipeline.method import cluster, kmeans, leopart
from pipeline.method.vectors import unit_rows


def separated_blobs(k: int = 6, per: int = 150, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k blobs of `per` unit vectors (D = dim) around random unit directions, noise std 0.01 per dimension, rows in
    random order -> (rows (k * per, dim) float32, blob of each row)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((k, dim)).astype(np.float32))
    blob = rng.permutation(np.repeat(np.arange(k), per))
    return unit_rows(centres[blob] + rng.normal(0, 0.01, (len(blob), dim)).astype(np.float32)), blob


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings of the same rows are one partition up to a permutation of the labels."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def in_child(code: str):
    """`code`, which sets `out` (JSON-able), run in a fresh Python beside this file -> out. Every faiss call of these
    tests runs so: a pytest process that loaded faiss after scikit-learn segfaults in the next test that runs
    Infomap (tests/unit/test_merge.py)."""
    script = ("import json, sys\n"
              f"sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'tests' / 'unit')!r}]\n"
              "import numpy as np\n"
              "from test_kmeans import separated_blobs\n"
              "from conftest import section\n"
              "from pipeline.method import cluster, kmeans, leopart\n"
              f"{code}\nprint(json.dumps(out))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_faiss_and_sklearn_give_the_same_partition_of_well_separated_blobs():
    x, blob = separated_blobs()
    sk = kmeans.assign(x, kmeans.fit(x, 6, 5, 50, 0, "sklearn"))
    fa = np.array(in_child("x, _ = separated_blobs()\n"
                           "out = kmeans.assign(x, kmeans.fit(x, 6, 5, 50, 0, 'faiss')).tolist()"))
    assert same_partition(sk, blob) and same_partition(fa, blob) and same_partition(sk, fa)
    assert not same_partition(fa, np.roll(blob, 1))  # the check itself tells partitions apart


def test_fit_gives_k_centres_and_is_seeded_for_both_backends():
    x, _ = separated_blobs(k=4, per=40)
    a, b = (kmeans.fit(x, 4, 2, 20, 3, "sklearn") for _ in range(2))
    assert a.shape == (4, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    fa = in_child("x, _ = separated_blobs(k=4, per=40)\n"
                  "a, b = (kmeans.fit(x, 4, 2, 20, 3, 'faiss') for _ in range(2))\n"
                  "out = [a.shape, str(a.dtype), bool((a == b).all())]")
    assert fa == [[4, 32], "float32", True]


def test_faiss_fits_on_every_row_it_is_given():
    """Faiss subsamples to 256 rows per centre by default; kmeans.fit turns that off, so the sample is
    TokenSample's alone: two centres fitted on 600 rows (more than 2 x 256) are the means of their blobs."""
    x, blob = separated_blobs(k=2, per=300)
    centres = np.array(in_child("x, _ = separated_blobs(k=2, per=300)\n"
                                "out = kmeans.fit(x, 2, 1, 20, 0, 'faiss').tolist()"), np.float32)
    want = np.stack([x[blob == b].mean(0) for b in range(2)])
    order = np.argsort(kmeans.assign(want, centres))
    np.testing.assert_allclose(centres[order], want, atol=1e-6)


def test_assign_is_the_nearest_centre_chunk_by_chunk_and_the_lowest_index_on_a_tie(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    c = rng.normal(size=(7, 5)).astype(np.float32)
    want = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), 1)
    monkeypatch.setattr(kmeans, "ASSIGN_CHUNK", 64)  # 16 chunks, the last one short
    got = kmeans.assign(x, c)
    assert got.dtype == np.int64 and got.tolist() == want.tolist()
    tie = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    assert kmeans.assign(np.array([[1.0, 0.0]], np.float32), tie).tolist() == [0]
    assert kmeans.assign(np.zeros((0, 5), np.float32), c).tolist() == []


def test_sample_rows_are_all_rows_when_they_fit_and_else_a_seeded_subset_in_order():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.testing.assert_array_equal(kmeans.sample_rows(x, 20, 0), x)
    s = kmeans.sample_rows(x, 5, 0)
    assert s.shape == (5, 2) and (np.diff(s[:, 0]) > 0).all() and set(s[:, 0]) <= set(x[:, 0])
    np.testing.assert_array_equal(s, kmeans.sample_rows(x, 5, 0))
    assert s.tolist() != kmeans.sample_rows(x, 5, 1).tolist()


def test_cluster_fitted_on_a_sample_assigns_every_embedding():
    """cluster.fit_sample below the number of masks: k-means sees 120 of the 900, every one gets its blob's label
    (scikit-learn here, faiss in a child process)."""
    x, blob = separated_blobs()
    labels, centres, dist = cluster.cluster_embeddings(x, section("cluster", k=6, fit_sample=120), 0)
    assert labels.shape == (900,) and same_partition(labels, blob)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5) and (dist < 0.01).all()
    fa = in_child("x, _ = separated_blobs()\n"
                  "labels, centres, dist = cluster.cluster_embeddings(x, section('cluster', k=6, fit_sample=120, "
                  "backend='faiss'), 0)\n"
                  "out = [labels.tolist(), float(dist.max())]")
    assert same_partition(np.array(fa[0]), blob) and fa[1] < 0.01


def test_leopart_parts_on_faiss_give_the_communities_of_sklearn():
    """merge.method leopart (louvain) with cluster.backend faiss: the parts and classes of the scikit-learn run, up to
    their numbering (toy_looks: three kinds of two looks)."""
    from test_merge import images_of, toy_looks
    feats, grids, _ = toy_looks()
    cfg = section("merge", method="leopart", parts=6, pca_dim=8, edge_threshold=0.02, algorithm="louvain")
    sk = leopart.communities_as_classes(feats, images_of(feats), grids, cfg, k=3, seed=0, backend="sklearn")[0]
    fa = in_child("from test_merge import images_of, toy_looks\n"
                  "feats, grids, _ = toy_looks()\n"
                  "cfg = section('merge', method='leopart', parts=6, pca_dim=8, edge_threshold=0.02, "
                  "algorithm='louvain')\n"
                  "got = leopart.communities_as_classes(feats, images_of(feats), grids, cfg, k=3, seed=0, "
                  "backend='faiss')[0]\n"
                  "out = [got.part_of_patch.tolist(), got.class_of_patch.tolist()]")
    assert same_partition(sk.part_of_patch, np.array(fa[0])) and same_partition(sk.class_of_patch, np.array(fa[1]))
    assert len(set(fa[1])) == 3


def test_backend_faiss_with_infomap_is_a_config_error_naming_both_keys():
    """Infomap segfaults in a process that loaded faiss after scikit-learn (faiss-cpu 1.15, infomap 2.x), so the
    combination is refused on load; louvain, or the sklearn backend, loads."""
    raw = raw_params()
    raw["cluster"]["backend"] = "faiss"
    assert raw["merge"]["method"] == "leopart" and raw["merge"]["algorithm"] == "infomap"
    with pytest.raises(ConfigError, match=r"'cluster\.backend' is 'faiss'; cannot run with merge\.algorithm 'infomap'"
                                          r" \(merge\.method leopart\).*merge\.algorithm louvain, or cluster\.backend "
                                          r"sklearn"):
        parse_params(raw)
    raw["merge"]["algorithm"] = "louvain"
    assert parse_params(raw).cluster.backend == "faiss"
    raw["merge"].update(algorithm="infomap", method="majority")
    assert parse_params(raw).merge.algorithm == "infomap"  # majority never runs infomap


# ---------------------------------------------------------------- TokenSample: the bounded seeded sample

def test_token_sample_is_the_whole_stream_when_it_fits_and_else_a_seeded_uniform_subset_held_in_bounds():
    rng = np.random.default_rng(3)
    stream = [rng.normal(size=(n, 4)).astype(np.float16) for n in (5, 0, 17, 9, 30, 2)]  # 63 rows
    whole = kmeans.TokenSample(63, seed=0)
    for rows in stream:
        whole.add(rows)
    assert whole.complete and whole.total == 63
    np.testing.assert_array_equal(whole.rows(), np.concatenate(stream))  # exactly the concatenation, in order
    held, draws = [], []
    for seed in (0, 0, 1):
        sample = kmeans.TokenSample(10, seed)
        for rows in stream:
            sample.add(rows)
            held.append(sample.held)
        assert not sample.complete and sample.total == 63
        pos = sample.positions_kept()
        assert len(pos) == 10 and (np.diff(pos) > 0).all()  # 10 distinct rows, in stream order
        np.testing.assert_array_equal(sample.rows(), np.concatenate(stream)[pos])
        draws.append(pos.tolist())
    assert draws[0] == draws[1] != draws[2]  # seeded
    assert max(held) <= 2 * 10 + 30  # pruned to 10 whenever more than 20 are held (plus the image being added)
