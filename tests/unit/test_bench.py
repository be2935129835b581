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


def test_the_train_stage_timing_is_read_from_its_timings_file_and_projected_in_parts(tmp_path):
    """A train row with the stage's own fit / predictions seconds (its timings.json): the rest of its wall time
    stays fixed, fitting scales with images and epochs, predicting with the images of both splits; without them
    the whole time scales with images and epochs (the upper bound)."""
    from benchmarks import project_gpu
    assert bench.train_timing(tmp_path) == {}
    (tmp_path / "timings.json").write_text('{"fit_s": 20.0, "predict_s": 10.0, "processes": 1}')
    assert bench.train_timing(tmp_path) == {"fit s": 20.0, "predict s": 10.0}
    row = {"stage": "train", "images": 1000, "eval images": 50, "wall s": 35.0}
    parts = project_gpu.project([{**row, **bench.train_timing(tmp_path)}], 10_000, 1_000, 12, 1)["train"]
    assert parts == 5.0 + 20.0 * 10 * 12 + 10.0 * 11_000 / 1_050
    assert project_gpu.project([row], 10_000, 1_000, 12, 1)["train"] == 35.0 * 10 * 12
