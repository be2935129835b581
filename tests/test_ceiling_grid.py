"""scripts/ceiling_grid.py: the table of recorded runs (mean ± sample std of the held-out mIoU per recipe)."""
from scripts import ceiling_grid


def test_the_table_gives_each_recipe_its_mean_and_sample_std_in_first_seen_order():
    recs = [{"recipe": "b", "changes": ["train.epochs=40", "train.threads=1"], "seed": 0, "miou": 0.8,
             "final_loss": 0.1},
            {"recipe": "a", "changes": [], "seed": 0, "miou": 0.5, "final_loss": 0.3},
            {"recipe": "b", "changes": ["train.epochs=40", "train.threads=1"], "seed": 1, "miou": 0.9,
             "final_loss": 0.2}]
    lines = ceiling_grid.table(recs).splitlines()
    # 0.8 and 0.9: mean 0.85, sample std sqrt(0.005) = 0.0707; the thread setting is not a recipe change
    assert lines[2] == "| b | train.epochs=40 | 0.850 ± 0.071 | 0, 1 | 0.150 |"
    assert lines[3] == "| a | (params.yaml) | 0.500 | 0 | 0.300 |"
    assert ceiling_grid.parse_recipe("x=train.decoder=fused,train.epochs=40") == \
        ("x", ["train.decoder=fused", "train.epochs=40"])
