import numpy as np


def test_object_features_match_a_hand_computation(benchmark_script):
    features = benchmark_script("probe_ceiling", "object_features")
    names = benchmark_script("probe_ceiling", "FEATURES")
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[2:4, 4:7] = 2  # a 2x3 block: rows 2-3, columns 4-6
    image = np.zeros((3, 8, 8))
    image[:, 2:4, 4:7] = np.array([0.2, 0.5, 0.9])[:, None, None]
    out = features(image, labels, 4)
    row = dict(zip(names, out[2]))
    assert np.allclose(out[1], 0) and np.allclose(out[3], 0)  # empty labels give zeros
    assert np.isclose(row["cx"], 5.5 / 8) and np.isclose(row["cy"], 3.0 / 8)
    assert np.isclose(row["sqrt_area"], np.sqrt(6 / 64))
    assert np.isclose(row["bbox_w"], 3 / 8) and np.isclose(row["bbox_h"], 2 / 8)
    assert np.isclose(row["var_x"], np.var([4.5, 5.5, 6.5]) / 64) and np.isclose(row["cov_xy"], 0)
    assert np.allclose([row["r"], row["g"], row["b"]], [0.2, 0.5, 0.9])
    background = dict(zip(names, out[0]))
    assert np.isclose(background["sqrt_area"], np.sqrt(58 / 64)) and np.isclose(background["r"], 0)
