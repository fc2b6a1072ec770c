import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("fsdp_worker.py")


def run_worker(tmp_path: Path, devices: int, batch_size: int) -> list[float]:
    out = tmp_path / f"losses_{devices}.json"
    subprocess.run(
        [sys.executable, str(WORKER), str(out), str(devices), str(batch_size)],
        check=True,
        cwd=tmp_path,
        timeout=300,
        capture_output=True,
    )
    return json.loads(out.read_text())


def test_fsdp2_two_ranks_match_one_process(tmp_path):
    """2-rank FSDP2 (ModelParallelStrategy, gloo) on batches of 4 per rank reproduces the
    losses of one process on the same global batches of 8, step after step (SGD updates
    included), though each rank sees a different number of answer tokens."""
    single = run_worker(tmp_path, 1, 8)
    sharded = run_worker(tmp_path, 2, 4)
    assert len(single) == len(sharded) == 3
    assert single[0] > single[-1]
    for a, b in zip(single, sharded, strict=True):
        assert abs(a - b) < 1e-4, (single, sharded)
