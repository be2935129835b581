"""pipeline/distributed.py: the one rule for which items a process handles, its inverse, and what processes hand
each other (two gloo processes, forked); evaluate's tally all-reduced."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.distributed import all_reduce_sum, gather, processes, shard, unshard, world
from pipeline.evaluate import scoring


@pytest.mark.parametrize("n,world", [(0, 1), (0, 3), (1, 2), (7, 1), (7, 2), (7, 3), (9, 3), (2, 5)])
def test_shard_is_disjoint_covering_balanced_and_keeps_the_order(n, world):
    items = [f"img_{i}" for i in range(n)]
    shares = [shard(items, r, world) for r in range(world)]
    flat = [x for s in shares for x in s]
    assert sorted(flat) == sorted(items) and len(flat) == n  # covering, disjoint
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    for s in shares:  # each share in the items' order
        assert s == sorted(s, key=items.index)
    assert unshard(shares) == items


def test_shard_takes_every_world_th_item_and_keeps_a_range_a_range():
    assert shard(list("abcdefg"), 1, 3) == ["b", "e"]
    assert shard(range(10), 2, 4) == range(2, 10, 4) and list(shard(range(10), 2, 4)) == [2, 6]
    assert unshard([[0, 3, 6], [1, 4], [2, 5]]) == [0, 1, 2, 3, 4, 5, 6]
    assert list(shard(iter("abcdefg"), 1, 3)) == ["b", "e"]  # a stream: the same share, drawn lazily


def test_processes_auto_is_one_without_a_gpu_and_a_count_is_itself():
    assert processes("auto") == max(torch.cuda.device_count(), 1)
    assert processes(3) == 3


def image_result(i: int) -> dict:
    """A made-up `scoring.score_image` result of image i: 2 x 2 confusion counts of row 'network', its kept
    pixels, one mask set's (intersection, union, detections) and, for odd i, instances."""
    return {"pixels": 10 + i, "confusion": {"network": np.array([[i, 1], [2, 3 * i]], np.int64)},
            "kept": {"network": 5 + i}, "masks": {"distill": (i, 2 * i + 1, [{"score": i / 10, "image": i}])},
            "instances": ((4, 4), [{"id": i}]) if i % 2 else None}


def tally_of(names: list[str]) -> scoring.Tally:
    tally = scoring.Tally(["network"], [], 2, 2, ["distill"])
    for n in names:
        tally.add(n, image_result(int(n[4:])))
    return tally


def tally_state(t: scoring.Tally) -> tuple:
    return (t.confs["network"].matrix.tolist(), t.confs["network"].images, t.kept, t.pixels,
            {k: v.tolist() for k, v in t.fg.items()}, t.detections, t.instances)


NAMES = [f"img_{i}" for i in range(7)]


def _two_process_worker(rank: int, rdzv: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rdzv, rank=rank, world_size=2)
    mine = shard(NAMES, *world())
    tally = tally_of(mine)
    tally.all_reduce(mine)
    got = {"gather": gather([n.upper() for n in mine]), "sum": all_reduce_sum(np.array([[rank + 1, 2]])).tolist(),
           "tally": tally_state(tally)}
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(got, f)
    dist.destroy_process_group()


def test_two_gloo_processes_gather_in_order_sum_counts_and_tally_what_one_process_tallies(tmp_path):
    out = tmp_path / "got"
    mp.start_processes(_two_process_worker, args=(f"file://{tmp_path / 'rdzv'}", str(out)), nprocs=2,
                       start_method="fork")
    want = tally_state(tally_of(NAMES))
    for rank in (0, 1):  # every process holds every result
        got = pickle.loads(Path(f"{out}.{rank}").read_bytes())
        assert got["gather"] == [n.upper() for n in NAMES]
        assert got["sum"] == [[3, 4]]
        assert got["tally"] == want
    assert want[0] == [[21, 7], [14, 63]] and want[3] == 91  # the sums over 7 images, by hand
