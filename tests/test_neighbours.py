"""Neighbour lists against a brute-force O(N^2) minimum-image search."""

import numpy as np
import pytest

from eignn_jax.physics import neighbours as neighbours_module
from eignn_jax.physics.neighbours import SortedPairs, neighbour_pairs, padded_capacity, union_pairs
from eignn_jax.physics.periodic import wrap


def brute_force_pairs(positions, box, cutoff):
    """Map (i, j) -> minimum-image vector for every pair i != j closer than cutoff."""
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    diff = positions[None, :, :] - positions[:, None, :]
    diff -= box * np.round(diff / box)
    dist = np.linalg.norm(diff, axis=-1)
    np.fill_diagonal(dist, np.inf)
    ii, jj = np.nonzero(dist < cutoff)
    return {(int(i), int(j)): diff[i, j] for i, j in zip(ii, jj)}


def random_system(rng, box, n):
    """Random positions, some far outside the box, some hugging its faces.

    Returns [n, 3] float64, σ.
    """
    positions = rng.uniform(0.0, 1.0, size=(n, 3)) * box
    # Push a quarter of the particles into other periodic images.
    moved = rng.choice(n, size=n // 4, replace=False)
    positions[moved] += rng.integers(-3, 4, size=(len(moved), 3)) * box
    # Put pairs straddling the faces: one just inside 0, one just below L.
    for k in range(6):
        axis = k % 3
        a, b = 2 * k, 2 * k + 1
        positions[a, axis] = 0.02 + 0.01 * k
        positions[b, axis] = box[axis] - 0.03
        positions[b, (axis + 1) % 3] = positions[a, (axis + 1) % 3]
        positions[b, (axis + 2) % 3] = positions[a, (axis + 2) % 3]
    return positions


def edges_as_dict(positions, box, centres, neighbours, shifts):
    positions = np.asarray(positions, dtype=np.float64)
    vectors = positions[neighbours] - positions[centres] + shifts * np.asarray(box)
    return {(int(i), int(j)): v for i, j, v in zip(centres, neighbours, vectors)}


def assert_sorted_unique(centres, neighbours):
    keys = centres.astype(np.int64) * (int(max(neighbours.max(), centres.max())) + 1) + neighbours
    assert np.all(np.diff(keys) > 0)


BOXES = [
    np.array([6.0, 6.0, 6.0]),
    np.array([5.3, 7.1, 9.4]),
    np.array([12.0, 5.01, 8.2]),
    np.array([9.41036, 9.41036, 9.41036]),
]


@pytest.mark.parametrize("seed,box", list(enumerate(BOXES)))
def test_neighbour_pairs_matches_brute_force(seed, box):
    rng = np.random.default_rng(seed)
    cutoff = 2.5
    positions = random_system(rng, box, 300)
    centres, neighbours, shifts = neighbour_pairs(positions, box, cutoff)

    assert centres.dtype == np.int32 and neighbours.dtype == np.int32
    assert shifts.dtype == np.int32 and shifts.shape == (len(centres), 3)
    assert np.all(centres != neighbours)
    assert_sorted_unique(centres, neighbours)

    got = edges_as_dict(positions, box, centres, neighbours, shifts)
    expected = brute_force_pairs(positions, box, cutoff)
    assert set(got) == set(expected)
    for key, vector in expected.items():
        np.testing.assert_allclose(got[key], vector, atol=1e-5)
        # Both directions are present with opposite vectors.
        np.testing.assert_allclose(got[key[::-1]], -vector, atol=1e-5)
    # The face-straddling pairs built into the system must be found.
    assert (0, 1) in got and (10, 11) in got


def test_neighbour_pairs_float32_input():
    rng = np.random.default_rng(7)
    box = np.array([8.0, 8.0, 8.0], dtype=np.float32)
    positions = (rng.uniform(-4.0, 4.0, size=(200, 3))).astype(np.float32)
    centres, neighbours, shifts = neighbour_pairs(positions, box, 1.5)
    got = edges_as_dict(positions, box, centres, neighbours, shifts)
    expected = brute_force_pairs(positions, box, 1.5)
    assert set(got) == set(expected)


def test_neighbour_pairs_rejects_small_box():
    positions = np.zeros((4, 3))
    with pytest.raises(ValueError):
        neighbour_pairs(positions, [5.0, 5.0, 4.9], 2.5)
    with pytest.raises(ValueError):
        neighbour_pairs(positions, [5.0, 5.0, 5.0], 2.5)


def test_neighbour_pairs_empty():
    centres, neighbours, shifts = neighbour_pairs(np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]), [10.0] * 3, 1.0)
    assert centres.shape == (0,) and neighbours.shape == (0,) and shifts.shape == (0, 3)


@pytest.mark.parametrize("seed,box", list(enumerate(BOXES)))
def test_union_pairs_matches_brute_force(seed, box):
    rng = np.random.default_rng(100 + seed)
    cutoff = 1.8
    positions_a = random_system(rng, box, 300)
    # Structure b: small displacements, then re-wrapped into [0, L) so the two
    # structures use different image conventions.
    positions_b = positions_a + rng.normal(scale=0.15, size=positions_a.shape)
    positions_b = np.mod(positions_b, box)

    centres, neighbours, shifts_a = union_pairs(positions_a, positions_b, box, cutoff)
    assert centres.dtype == np.int32 and neighbours.dtype == np.int32 and shifts_a.dtype == np.int32
    assert_sorted_unique(centres, neighbours)

    pairs_a = brute_force_pairs(positions_a, box, cutoff)
    pairs_b = brute_force_pairs(positions_b, box, cutoff)
    expected = set(pairs_a) | set(pairs_b)
    got = edges_as_dict(positions_a, box, centres, neighbours, shifts_a)
    assert set(got) == expected
    # The two structures must actually differ for the union to be tested.
    assert set(pairs_a) != set(pairs_b)

    for (i, j), vector in got.items():
        reference = positions_a[j] - positions_a[i]
        reference = reference - box * np.round(reference / box)
        np.testing.assert_allclose(vector, reference, atol=1e-5)


def test_union_pairs_reuses_pairs_of_b():
    rng = np.random.default_rng(11)
    box = BOXES[3]
    positions_a = random_system(rng, box, 300)
    positions_b = positions_a + rng.normal(scale=0.2, size=positions_a.shape)
    # The pairs of b within 1.8 σ, kept while searching b with a longer cutoff (as the
    # graph builder does with the energy's 2.5 σ search), give the same union.
    shared = SortedPairs(positions_b, box, 2.5, inner=1.8).inner
    expected = union_pairs(positions_a, positions_b, box, 1.8)
    got = union_pairs(positions_a, positions_b, box, 1.8, pairs_b=shared)
    for x, y in zip(expected, got):
        np.testing.assert_array_equal(x, y)
    as_float = union_pairs(positions_a, positions_b, box, 1.8, shift_dtype=np.float32)[2]
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, expected[2])


def test_far_unwrapped_positions_take_the_argsort_path(monkeypatch):
    """Shifts too large to pack into the sort keys: the argsort path, same edges."""
    rng = np.random.default_rng(12)
    box = BOXES[1]
    positions = random_system(rng, box, 200)
    packed = neighbour_pairs(positions, box, 2.0)
    far = positions + rng.integers(-10**5, 10**5, size=positions.shape) * box
    paths = []
    original = neighbours_module._DirectedEdges.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        paths.append(self.packed)

    monkeypatch.setattr(neighbours_module._DirectedEdges, "__init__", spy)
    centres, neighbours, shifts = neighbour_pairs(far, box, 2.0)
    assert paths == [False]
    np.testing.assert_array_equal(centres, packed[0])
    np.testing.assert_array_equal(neighbours, packed[1])
    got = edges_as_dict(far, box, centres, neighbours, shifts)
    for (i, j), vector in edges_as_dict(positions, box, *packed).items():
        np.testing.assert_allclose(got[i, j], vector, atol=1e-6)


def test_union_pairs_rejects_long_edges():
    box = np.array([6.0, 6.0, 6.0])
    positions_a = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 3.0, 3.0]])
    positions_b = positions_a.copy()
    # In b particles 1 and 2 are neighbours, but in a that pair is longer than
    # half the box, so its minimum image in a is not trustworthy.
    positions_b[1] = [3.0, 3.0, 2.0]
    positions_b[2] = [3.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        union_pairs(positions_a, positions_b, box, 1.5)


def test_minimum_image_range():
    rng = np.random.default_rng(3)
    box = np.array([3.0, 4.0, 5.0])
    vectors = rng.uniform(-20.0, 20.0, size=(1000, 3))
    vectors[:3] = 0.5 * box  # exactly on the boundary: must map to -L/2
    wrapped = wrap(vectors, box)
    assert np.all(wrapped >= -0.5 * box) and np.all(wrapped < 0.5 * box)
    np.testing.assert_allclose(wrapped[:3], -0.5 * np.broadcast_to(box, (3, 3)))
    images = (wrapped - vectors) / box
    np.testing.assert_allclose(images, np.round(images), atol=1e-9)


def test_padded_capacity_covers_the_margin_on_a_coarse_grid():
    for count in [0, 1, 7, 31, 100, 4095, 45_000, 1_000_003]:
        for margin in (1.0, 1.05, 1.2):
            capacity = padded_capacity(count, margin)
            wanted = max(1, int(np.ceil(count * margin)))
            assert wanted <= capacity < wanted + max(1, wanted) / 16 + 1
    # Pair counts of one system a per cent apart share a capacity: one compilation.
    assert len({padded_capacity(n, 1.05) for n in range(43_900, 44_800, 50)}) == 1
