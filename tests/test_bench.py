from benchmarks import bench


def test_per_image_averages_repeated_sizes_and_sums_the_stages():
    """The scaling table: ms per training image of each stage at each size (a size run twice: the mean of its runs),
    the whole DAG as the sum of the stages, and the largest size over the smallest."""
    rows = [{"images": 1000, "stage": "features", "wall s": 40.0}, {"images": 1000, "stage": "train", "wall s": 200.0},
            {"images": 10000, "stage": "features", "wall s": 380.0},
            {"images": 10000, "stage": "train", "wall s": 2100.0},
            {"images": 1000, "stage": "features", "wall s": 44.0}]  # the second 1,000 run, stopped after features
    table = {r["stage"]: r for r in bench.per_image(rows)}
    assert table["features"]["ms/img at 1000"] == 42.0 and table["features"]["ms/img at 10000"] == 38.0
    assert table["train"]["ms/img at 1000"] == 200.0 and table["train"]["ms/img at 10000"] == 210.0
    assert table["whole DAG"]["ms/img at 1000"] == 242.0 and table["whole DAG"]["ms/img at 10000"] == 248.0
    assert table["whole DAG"]["10000 / 1000"] == 248.0 / 242.0
