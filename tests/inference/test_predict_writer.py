"""ltrain-predict's CSV writer: per-rank part files merged in input order, padding repeats dropped."""

from __future__ import annotations

import csv

from ltrain.inference.predict import merge_parts


def test_rank_parts_merge_in_input_order_without_the_samplers_padding(tmp_path):
    names = [f"test[{i}]" for i in range(5)]
    # DistributedSampler(shuffle=False) over 5 inputs and 2 ranks: rank 0 gets 0, 2, 4; rank 1 gets 1, 3, 0 (padding)
    for rank, indices in ((0, [0, 2, 4]), (1, [1, 3])):
        with open(tmp_path / f"part{rank}", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "predicted"])
            w.writerows([i, i * 10] for i in indices)
    with open(tmp_path / "part1", "a", newline="") as f:
        csv.writer(f).writerow([0, 0])  # the padded repeat comes last on its rank
    out = merge_parts([tmp_path / "part0", tmp_path / "part1"], tmp_path / "predictions.csv", names)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["input", "predicted"], *([names[i], str(i * 10)] for i in range(5))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # parts and temporary file removed
