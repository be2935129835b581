"""scripts/ceiling_grid.py and scripts/diagnose_table.py: the tables of recorded diagnostic runs (mean ± sample std)."""
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


def test_the_oracle_table_gives_mean_and_sample_std_over_records():
    from scripts import diagnose_table

    def rec(p, n):
        rows = {"train": {"pseudolabels": {"miou": p}, "filter": {"miou": p}, "merge": {"miou": p},
                          "network": {"miou": n}}, "eval": {"network": {"miou": n}}}
        return {"oracle": rows, "real": rows, "oracle_noise": 0.1}

    lines = diagnose_table.table([rec(0.7, 0.5), rec(0.6, 0.5)]).splitlines()
    assert lines[2] == "| oracle features (noise 0.1) | train | pseudolabels | 0.650 ± 0.071 | 2 |"
    assert lines[6] == "| oracle features (noise 0.1) | eval | network | 0.500 ± 0.000 | 2 |"
    assert len(lines) == 2 + 10
