"""pipeline/distributed.py: the one rule for which items a process handles, and its inverse."""
import pytest

from pipeline.distributed import processes, shard, unshard


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


def test_processes_auto_is_one_without_a_gpu_and_a_count_is_itself():
    import torch

    assert processes("auto") == max(torch.cuda.device_count(), 1)
    assert processes(3) == 3
