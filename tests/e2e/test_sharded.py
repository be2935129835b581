"""The per-image stages under torch.distributed on a tiny configuration: features, proposals, pseudolabels,
filter, merge and evaluate write byte-identical outputs run as 1 process, as 2 processes (processes: 2, the stage
relaunching itself under torchrun) and as a simulated two-node run (two torchrun processes side by side, one
process each, c10d rendezvous on the loopback, gloo)."""
import hashlib
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml
from test_heldout import ISOLATION_TINY, STAGES, stage

from conftest import write_params

pytestmark = pytest.mark.slow
OUTPUTS = {"features": "03_features", "proposals": "04_proposals", "pseudolabels": "07_pseudolabels",
           "filter": "08_filter", "merge": "09_merge", "evaluate": "11_evaluate"}
# 16 training images in 4 shards of 4 (2 batches of 2 each) and 4 evaluation images in 1: the two processes each
# write shards of their own, and one of them none of the evaluation split's
TINY = {**ISOLATION_TINY, "features": {"batch_size": 2, "shard_size": 4}}


def digests(work, folder: str) -> dict[str, str]:
    """sha256 of every file under work/data/<folder> -> {relative path: digest}."""
    root = work / "data" / folder
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def set_top_level(work, **values) -> None:
    """work/params.yaml with top-level keys (workers, processes) set."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump({**params, **values}, sort_keys=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(work, name: str, env: dict) -> None:
    """`stages.<name>` as two torchrun nodes of one process each, started side by side on the loopback."""
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node_rank", str(r), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "-m", f"stages.{name}"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], f"stage {name} on two nodes failed:\n" + "\n".join(
        log[-3000:] for log in logs)


def test_sharded_stages_write_the_same_bytes_on_one_process_two_processes_and_two_nodes(tmp_path):
    one = tmp_path / "one"
    write_params(one, **TINY)
    set_top_level(one, workers=1, processes=1)
    for name in STAGES + ["evaluate"]:
        stage(one, name)
    want = {name: digests(one, folder) for name, folder in OUTPUTS.items()}
    assert len([f for f in want["features"] if f.startswith("shard_")]) == 4  # 4 training shards to share
    assert want["evaluate"]["metrics.json"] and "labels/synth_00000.png" in want["merge"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    for run, processes in (("two_processes", 2), ("two_nodes", 1)):
        work = tmp_path / run
        shutil.copytree(one, work)
        set_top_level(work, processes=processes)
        for name, folder in OUTPUTS.items():
            shutil.rmtree(work / "data" / folder)
            if processes == 2:
                assert "torch.distributed.run" in stage(work, name, env)
            else:
                two_nodes(work, name, env)
            assert digests(work, folder) == want[name], f"{run}: stage {name} wrote other bytes"
