import numpy as np


def test_object_ious_match_a_hand_computation(benchmark_script):
    object_ious = benchmark_script("decoded_mask_errors", "object_ious")
    true = np.zeros((6, 6), dtype=np.int64)
    true[0:2, 0:2] = 1  # 4 pixels
    true[3:6, 3:6] = 2  # 9 pixels
    pred = np.zeros((6, 6), dtype=np.int64)
    pred[0:2, 0:3] = 4  # covers object 1 and two background pixels: IoU 4 / 6
    pred[4:6, 4:6] = 3  # inside object 2: IoU 4 / 9; segment 0 (26 pixels) holds its other 5: IoU 5 / 30
    rows = {label: (area, iou) for label, area, iou in object_ious(true, pred)}
    assert set(rows) == {1, 2}  # the background label is skipped
    assert rows[1] == (4, 4 / 6)
    assert rows[2][0] == 9 and np.isclose(rows[2][1], 4 / 9)


def test_bins_count_every_object_once(benchmark_script):
    bin_rows = benchmark_script("decoded_mask_errors", "bin_rows")
    # columns: area, attention IoU, decoded IoU, decoded agreement, decoded probability
    objects = np.array([[10, 0.8, 0.1, 0.3, 0.2], [20, 0.9, 0.5, 0.7, 0.6], [40, 1.0, 0.9, 0.9, 0.8],
                        [41, 0.9, 0.7, 0.8, 0.7]], dtype=float)
    rows = bin_rows(objects, pixels=1024)  # area shares 0.010, 0.020, 0.039, 0.040
    assert [r["objects"] for r in rows] == [1, 1, 2, 0, 0]
    assert rows[0]["decoded_missed"] == 1.0 and rows[1]["decoded_missed"] == 0.0
    assert np.isclose(rows[2]["decoded_iou"], 0.8) and rows[3]["decoded_iou"] is None
