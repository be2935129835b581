"""Every core (pipeline/parallel.py): map_images gives fn's results in input order for any worker count, raises a
worker's error in the caller and draws items lazily; each per-image stage function it runs (proposals, the label maps
of pseudolabels / filter / merge, evaluate's scoring) writes or returns the same bytes with 1 and 2 workers."""
import json
import os
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import run_prepare, write_params
from pipeline import io, parallel
from pipeline.data import synth
from pipeline.method import proposals


def square_after_wait(x: int) -> tuple[int, int]:
    """Later items finish first (a longer wait for smaller x), so an unordered gather would show."""
    import time

    time.sleep(0.002 * (20 - x % 20))
    return x * x, os.getpid()


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"item {x} is bad")
    return x


def threads_here(_: int) -> int:
    from threadpoolctl import threadpool_info

    return max(i["num_threads"] for i in threadpool_info())


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` -> its bytes, by path relative to `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers,chunk", [(2, 1), (2, 3), (3, 2)])
def test_map_images_yields_in_input_order_from_other_processes(workers, chunk):
    got = list(parallel.map_images(square_after_wait, range(23), workers, chunk))
    assert [r for r, _ in got] == [x * x for x in range(23)]
    pids = {pid for _, pid in got}
    # other processes, several of them (not always every worker: with the fork server's preloaded imports a worker
    # starts in milliseconds, and on busy cores the first ones may take every chunk before the last has started)
    assert os.getpid() not in pids and 2 <= len(pids) <= workers


def test_one_worker_runs_in_this_process_and_zero_means_every_core():
    assert {pid for _, pid in parallel.map_images(square_after_wait, range(3), 1)} == {os.getpid()}
    assert parallel.resolve_workers(0) == parallel.cores() >= 1 and parallel.resolve_workers(5) == 5
    with pytest.raises(ValueError, match="workers is -1"):
        parallel.resolve_workers(-1)


def test_a_workers_error_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="item 7 is bad"):
        list(parallel.map_images(fail_on_seven, range(12), 2, 2))


class NeedsThreeArgs(Exception):
    """Like scipy's ArpackNoConvergence: pickles, but cannot be rebuilt from its args."""

    def __init__(self, msg: str, values: list, vectors: list) -> None:
        super().__init__(msg)
        self.values, self.vectors = values, vectors


def fail_unpicklably_on_five(x: int) -> int:
    if x == 5:
        raise NeedsThreeArgs(f"item {x} did not converge", [], [])
    return x


def test_a_worker_error_that_does_not_unpickle_comes_back_as_one_that_does(monkeypatch):
    """Such an exception kills the pool's result thread when it arrives there: the caller would wait forever
    (map_images over 2 workers hangs). A worker's chunk raises a WorkerError naming the original's type and
    message instead, which survives the trip (tested on `_run_chunk` itself, so a regression fails here instead of hanging);
    a plain exception still goes as itself, and in the caller's process nothing is pickled."""
    import pickle

    monkeypatch.setattr(parallel, "_FN", fail_unpicklably_on_five)
    assert parallel._run_chunk([1, 2]) == [1, 2]
    with pytest.raises(parallel.WorkerError, match=r"NeedsThreeArgs in a worker: item 5 did not converge") as err:
        parallel._run_chunk([4, 5])
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)
    monkeypatch.setattr(parallel, "_FN", fail_on_seven)
    with pytest.raises(ValueError, match="item 7 is bad"):
        parallel._run_chunk([7])
    with pytest.raises(NeedsThreeArgs):
        list(parallel.map_images(fail_unpicklably_on_five, range(12), 1))


def test_items_are_drawn_as_the_pool_needs_them():
    drawn = []

    def items():
        for i in range(200):
            drawn.append(i)
            yield i

    it = parallel.map_images(square_after_wait, items(), 2, 3)
    next(it)
    assert len(drawn) <= 2 * 2 * 3 + 3  # at most 2 * workers chunks in flight, not all 200 items
    it.close()  # stops the pool


def test_each_worker_runs_blas_and_openmp_on_one_thread():
    assert set(parallel.map_images(threads_here, range(4), 2, 1)) == {1}


def coarse_masks(size: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthetic images (size, size, 3) and their objects' union, coarsened to 8 px patches: GrabCut's input."""
    out = []
    for _, img, lab in synth.generate_dataset(0, count, size, 3):
        grid = cv2.resize((lab > 0).astype(np.float32), (size // 8, size // 8), interpolation=cv2.INTER_AREA) > 0.5
        out.append((img, proposals.upsample(grid, size)))
    return out


def raw_grabcut(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.grabCut as grabcut_refine calls it (band 4, 3 iterations), without resetting OpenCV's RNG."""
    kernel = np.ones((9, 9), np.uint8)
    gc = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    gc[cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)] = cv2.GC_PR_BGD
    gc[mask] = cv2.GC_PR_FGD
    gc[cv2.erode(mask.astype(np.uint8), kernel).astype(bool)] = cv2.GC_FGD
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), gc, None, np.zeros((1, 65)), np.zeros((1, 65)), 3,
                cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def test_grabcut_refine_does_not_depend_on_what_ran_before_it():
    """cv2.grabCut alone changes with the state of OpenCV's RNG (here for some of 16 masks), which every earlier
    call moves on: in one process an image's masks would depend on the images refined before it, so on how they
    were split between workers. grabcut_refine resets the RNG: the same masks whatever the state."""
    cases = coarse_masks(64, 16)

    def run(refine, state: int) -> list[np.ndarray]:
        out = []
        for image, mask in cases:
            cv2.setRNGSeed(state)
            out.append(refine(image, mask))
        return out

    raw = [run(raw_grabcut, s) for s in (1, 2)]
    assert any((a != b).any() for a, b in zip(*raw))  # the hazard is real on these inputs
    ours = [run(lambda im, m: proposals.grabcut_refine(im, m, 4, 3), s) for s in (1, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(*ours))


def colour_features(image: np.ndarray, patch: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 -> (H/p, W/p, 6) float16 patch features: mean colour and its spread, centred."""
    h, w = image.shape[0] // patch, image.shape[1] // patch
    x = image.astype(np.float32).reshape(h, patch, w, patch, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, -1, 3)
    f = np.concatenate([x.mean(2), x.std(2)], -1)
    return (f - f.reshape(-1, 6).mean(0)).astype(np.float16)


def test_the_prepare_stage_writes_the_same_bytes_with_one_and_two_workers(tmp_path, monkeypatch):
    root = tmp_path / "photos"  # a folder dataset: labelled, unlabelled and a non-image file
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 255, (40 + i, 56, 3), dtype=np.uint8))
        if i % 3:
            cv2.imwrite(str(root / "labels" / f"im{i}.png"), (rng.random((40 + i, 56)) > 0.5).astype(np.uint8))
    (root / "images" / "notes.txt").write_text("not an image")
    out = {}
    for workers in (1, 2):
        work = tmp_path / f"w{workers}"
        write_params(work, data={"name": "folder", "root": str(root), "image_size": 32, "eval_fraction": 0.3})
        params = {**yaml.safe_load((work / "params.yaml").read_text()), "workers": workers}
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        monkeypatch.chdir(work)
        from stages import prepare

        prepare.main()
        out[workers] = files(work / "data/01_prepare")
    manifest = json.loads(out[1]["manifest.json"])
    assert len(manifest["names"]) + len(manifest["eval_names"]) == 7 and len(manifest["labelled"]) == 4
    assert sum(k.startswith("images/") for k in out[1]) == 7 and sum(k.startswith("gt/") for k in out[1]) == 4
    assert out[1] == out[2]


def test_the_proposals_stage_writes_the_same_bytes_with_one_and_two_workers(tmp_path, monkeypatch):
    from stages import proposals as stage

    data = {"synth_images": 24, "synth_eval_images": 0, "image_size": 64}
    manifest = run_prepare(tmp_path, monkeypatch, data=data)
    writer = io.ShardWriter(tmp_path / "data/03_features", 10)  # three shards
    for name in manifest["names"]:
        f = colour_features(io.read_image(tmp_path / "data/01_prepare/images" / f"{name}.png"))
        writer.add(name, {"tokens": f, "keys": f})
    writer.close()
    out = {}
    for workers in (1, 2):
        params = {**write_params(tmp_path, data=data, proposals={"sources": ["ncut"]}), "workers": workers}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        stage.main()
        out[workers] = files(tmp_path / "data/04_proposals")
        os.rename(tmp_path / "data/04_proposals", tmp_path / f"data/04_proposals_{workers}")
    assert len(out[1]) == 2 * 24 + 2 and sum(len(v) > 0 for v in io.read_json(
        tmp_path / "data/04_proposals_1/proposals.json").values()) >= 12  # masks, overlays, 2 tables; most images
    assert out[1] == out[2]


def labelled_masks(folder: Path, count: int) -> dict[str, np.ndarray]:
    """`count` images with mask maps of 0-3 masks (folder/prepare/images, folder/masks/masks) -> {name: mask map}."""
    rng = np.random.default_rng(0)
    maps = {}
    for i in range(count):
        name = f"im{i:02d}"
        m = np.zeros((24, 32), np.uint8)
        for k in range(1, int(rng.integers(0, 4)) + 1):
            y, x = rng.integers(0, 16), rng.integers(0, 24)
            m[y:y + 8, x:x + 8] = k
        maps[name] = m
        io.write_label(folder / "masks/masks" / f"{name}.png", m)
        io.write_image(folder / "prepare/images" / f"{name}.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return maps


def test_the_label_maps_of_pseudolabels_filter_and_merge_are_the_same_bytes_with_one_and_two_workers(tmp_path):
    from pipeline.method import leopart
    from pipeline.method import labelmaps

    maps = labelled_masks(tmp_path, 11)
    classes = {n: {k: (k + i) % 5 if k != 2 else io.IGNORE for k in range(1, int(m.max()) + 1)}
               for i, (n, m) in enumerate(maps.items())}
    for workers in (1, 2):
        labelmaps.write_mask_labels(tmp_path / "prepare", tmp_path / "masks", tmp_path / f"mask_{workers}", list(maps),
                                    classes, "test", workers)
        items = [(n, (m[::8, ::8].copy(), (m[::8, ::8] + 1).astype(np.uint8), np.arange(1, 4, dtype=np.uint8)))
                 for n, m in maps.items()]  # leopart: owner grid, patch classes, mask classes
        labelmaps.write_rendered_labels(tmp_path / "prepare", tmp_path / "masks", tmp_path / f"leopart_{workers}",
                                        items, leopart.pixel_labels, "test", workers)
    for kind in ("mask", "leopart"):
        one, two = files(tmp_path / f"{kind}_1"), files(tmp_path / f"{kind}_2")
        assert len(one) == 2 * 11 and one == two
    assert io.read_label(tmp_path / "mask_2/labels/im00.png").max() > 0


def test_evaluate_scores_each_image_the_same_with_one_and_two_workers(tmp_path):
    from pipeline.evaluate import baselines, scoring

    maps = labelled_masks(tmp_path, 9)
    rng = np.random.default_rng(1)
    for name, m in maps.items():
        gt = np.where(rng.random(m.shape) < 0.9, m % 3, 255).astype(np.uint8)
        io.write_label(tmp_path / "prepare/gt" / f"{name}.png", gt)
        io.write_label(tmp_path / "pred" / f"{name}.png", np.roll(m, 1, 0) % 3)
    grids = {n: rng.normal(size=(3, 4, 8)).astype(np.float16) for n in maps}
    colour = baselines.fit_colour(io.LazyImages(tmp_path / "prepare", list(maps)), 3, 0, 2000, 2)
    feature = baselines.fit_features(list(grids.values()), 3, 0, 2, 1000)
    score = partial(scoring.score_image, prep=tmp_path / "prepare", sources={"network": tmp_path / "pred"}, n_pred=3,
                    n_gt=3, colour=colour, feature=feature, masks={"proposals": tmp_path / "masks"}, components=True)
    items = [(n, grids[n], {"proposals": [0.9, 0.5, 0.7][:int(m.max())]}) for n, m in maps.items()]
    one, two = (list(parallel.map_images(score, items, w, 2)) for w in (1, 2))

    def flat(results: list[dict]) -> list:
        return [(r["pixels"], sorted((k, v.tolist()) for k, v in r["confusion"].items()), sorted(r["kept"].items()),
                 sorted(r["masks"].items()), r["instances"])
                for r in results]

    assert flat(one) == flat(two)
    assert {"network", "baseline_colour_kmeans", "baseline_feature_kmeans"} == set(one[0]["confusion"])
