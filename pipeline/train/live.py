"""The training run's record as it goes: dvclive curves (loss and lr per step, each round's relabelled share and
final loss) and a console line every 10 steps, on rank 0 alone. Wall-clock figures reach the console only, never
the curves, so two runs of one configuration write the same curves."""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.train import checkpoint


class TrainLog:
    """dvclive's Live in `folder` (enabled: this process writes; rank 0) continuing at step `offset` (a resumed
    run: the rows a killed run logged after its last checkpoint are dropped first)."""

    def __init__(self, folder: str | Path, offset: int, resumed: bool, enabled: bool) -> None:
        self.live, self.tick = None, time.perf_counter()
        if not enabled:
            return
        if resumed:
            checkpoint.truncate_live(folder, offset)
        from dvclive import Live
        self.live = Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None, resume=resumed)
        self.live.step = offset

    def step(self, rec: dict) -> None:
        """One of `self_train`'s step records ({'round', 'epoch', 'step', 'loss', 'lr'})."""
        if self.live is None:
            return
        for k in ("loss", "lr"):
            self.live.log_metric(f"train/{k}", rec[k])
        self.live.next_step()
        if rec["step"] % 10 == 0:
            now = time.perf_counter()
            print(f"train round {rec['round']} epoch {rec['epoch']} step {rec['step']}: loss {rec['loss']:.4f} "
                  f"({(now - self.tick) / 10:.2f} s/step)", flush=True)
            self.tick = now

    def end(self, rounds: list[dict]) -> None:
        """`self_train`'s rounds -> per round its relabelled share and final loss; the record is closed."""
        if self.live is None:
            return
        for rd in rounds:
            self.live.log_metric(f"round_{rd['round']}/relabel_kept", rd["kept"], plot=False)
            self.live.log_metric(f"round_{rd['round']}/final_loss", rd["history"][-1]["loss"] if rd["history"]
                                 else 0.0, plot=False)
        self.live.end()
