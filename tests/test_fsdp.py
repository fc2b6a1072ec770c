import json
import subprocess
import sys
from pathlib import Path

import torch
from helpers import tiny_model

from mm15_components.weights import load_weights_from, read_weights

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

    # the distributed checkpoint it saved reads back whole, as the ranks gathered it
    gathered = torch.load(tmp_path / "gathered.pt", weights_only=True)
    stored = read_weights(tmp_path / "sharded")
    assert stored.keys() == gathered.keys()
    for key, value in gathered.items():
        torch.testing.assert_close(stored[key], value, rtol=0, atol=0, msg=key)
    model = tiny_model()
    model.set_vocabulary(*stored["language.model.model.embed_tokens.weight"].shape[:1], 0)
    assert load_weights_from(model, tmp_path / "sharded").fits
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, gathered[key], rtol=0, atol=0, msg=key)
