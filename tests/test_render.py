"""The torch rasterizer against independent references: a brute-force per-pixel renderer written here
(numpy, scipy rotations, sequential compositing), finite differences, an analytic footprint, and the
real SH basis from scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from backend.errors import NotAvailableError
from backend.formats import SPLAT_LOW_PASS_PX2
from backend.render import Cameras, Gaussians, render
from backend.render.sh import sh_basis


def look_at_face(distance: float, yaw: float = 0.0) -> np.ndarray:
    """World-to-camera (OpenCV) of a camera on a circle around +Y looking at the origin."""
    camera_to_world_rotation = Rotation.from_euler("y", yaw).as_matrix() @ np.diag([1.0, -1.0, -1.0])
    centre = Rotation.from_euler("y", yaw).as_matrix() @ np.array([0.0, 0.0, distance])
    viewmat = np.eye(4)
    viewmat[:3, :3] = camera_to_world_rotation.T
    viewmat[:3, 3] = -camera_to_world_rotation.T @ centre
    return viewmat


def make_scene(n: int, seed: int, sh_degree: int = 3, opacity_range=(0.2, 0.98), spread=0.06,
               dtype=torch.float64):
    """A random head-sized cloud plus an opaque stack in the middle (exercises the early stop)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, (n, 3))
    means[: n // 5] = rng.normal(0.0, 0.002, (n // 5, 3))  # an opaque stack -> T < 1e-4
    quats = rng.normal(size=(n, 4))
    scales = rng.uniform(0.004, 0.02, (n, 3))
    opacities = rng.uniform(*opacity_range, n)
    opacities[: n // 5] = 0.999  # above the 0.99 clamp
    sh = rng.normal(0.0, 0.4, (n, (sh_degree + 1) ** 2, 3))
    as_tensor = lambda a: torch.tensor(a, dtype=dtype)
    return Gaussians(as_tensor(means), as_tensor(quats), as_tensor(scales), as_tensor(opacities),
                     as_tensor(sh))


def make_cameras(width: int, height: int, dtype=torch.float64, yaws=(0.0, 0.5)) -> Cameras:
    viewmats = np.stack([look_at_face(0.6, yaw) for yaw in yaws])
    K = np.array([[70.0, 0.0, 0.45 * width], [0.0, 75.0, 0.55 * height], [0.0, 0.0, 1.0]])
    Ks = np.stack([K] * len(yaws))
    return Cameras(torch.tensor(viewmats, dtype=dtype), torch.tensor(Ks, dtype=dtype), width, height)


def reference_render(g: Gaussians, cameras: Cameras, background: np.ndarray, degree: int):
    """Brute force: every pixel against every Gaussian, composited one Gaussian at a time."""
    means, scales = g.means.double().numpy(), g.scales.double().numpy()
    rotations = Rotation.from_quat(g.quats.double().numpy()[:, [1, 2, 3, 0]]).as_matrix()
    opacities, sh = g.opacities.double().numpy(), g.sh.double().numpy()
    width, height = cameras.width, cameras.height
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    images = []
    for viewmat, K in zip(cameras.viewmats.double().numpy(), cameras.Ks.double().numpy()):
        W, w = viewmat[:3, :3], viewmat[:3, 3]
        splats = []
        for i in range(len(means)):
            t = W @ means[i] + w
            if t[2] <= 0.01:
                continue
            sigma_c = W @ rotations[i] @ np.diag(scales[i] ** 2) @ rotations[i].T @ W.T
            fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
            ux = np.clip(t[0] / t[2], -cx / fx - 0.15 * width / fx, (width - cx) / fx + 0.15 * width / fx)
            uy = np.clip(t[1] / t[2], -cy / fy - 0.15 * height / fy,
                         (height - cy) / fy + 0.15 * height / fy)
            J = np.array([[fx / t[2], 0, -fx * ux / t[2]], [0, fy / t[2], -fy * uy / t[2]]])
            cov = J @ sigma_c @ J.T + SPLAT_LOW_PASS_PX2 * np.eye(2)
            centre = (K @ (t / t[2]))[:2]
            direction = means[i] + W.T @ w
            direction /= np.linalg.norm(direction)
            basis = sh_basis(degree, torch.tensor(direction)).numpy()
            colour = np.maximum(basis @ sh[i, : (degree + 1) ** 2] + 0.5, 0.0)
            splats.append((t[2], centre, np.linalg.inv(cov), opacities[i], colour))
        splats.sort(key=lambda s: s[0])
        images.append(_composite_sequential(splats, xs, ys, background))
    return [np.stack(parts) for parts in zip(*images)]


def _composite_sequential(splats, xs, ys, background):
    T = np.ones_like(xs)
    done = np.zeros(xs.shape, bool)
    rgb, depth = np.zeros(xs.shape + (3,)), np.zeros_like(xs)
    for z, centre, conic, opacity, colour in splats:
        dx, dy = xs - centre[0], ys - centre[1]
        power = 0.5 * (conic[0, 0] * dx * dx + 2 * conic[0, 1] * dx * dy + conic[1, 1] * dy * dy)
        alpha = np.minimum(0.99, opacity * np.exp(-power))
        alpha[alpha < 1 / 255] = 0.0
        test_T = T * (1 - alpha)
        stop = ~done & (test_T < 1e-4)
        done |= stop
        contribute = ~done
        rgb += np.where(contribute[..., None], (alpha * T)[..., None] * colour, 0.0)
        depth += np.where(contribute, alpha * T * z, 0.0)
        T = np.where(contribute, test_T, T)
    alpha_out = 1 - T
    rgb += T[..., None] * background
    return rgb, alpha_out[..., None], (depth / np.maximum(alpha_out, 1e-10))[..., None]


@pytest.mark.parametrize("tile_size", [16, 8])
def test_matches_brute_force_float64(tile_size):
    g, cameras = make_scene(40, seed=1), make_cameras(40, 28)
    background = np.array([0.2, 0.5, 0.9])
    out = render(g, cameras, background=torch.tensor(background), tile_size=tile_size)
    rgb, alpha, depth = reference_render(g, cameras, background, degree=3)
    assert alpha.max() > 0.999, "the scene must reach the early stop somewhere"
    assert (alpha > 0).mean() > 0.3 and (alpha < 1e-3).mean() > 0.05
    np.testing.assert_allclose(out.rgb.numpy(), rgb, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.alpha.numpy(), alpha, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.depth.numpy(), depth, atol=1e-4, rtol=0)
    assert np.abs(out.rgb.numpy() - rgb).max() < 1e-9


def test_float32_close_to_brute_force():
    g, cameras = make_scene(40, seed=2, dtype=torch.float32), make_cameras(40, 28, dtype=torch.float32)
    out = render(g, cameras, background=torch.tensor([1.0, 1.0, 1.0]))
    rgb, alpha, _ = reference_render(g, cameras, np.ones(3), degree=3)
    error = np.abs(out.rgb.numpy() - rgb)
    assert np.quantile(error, 0.999) < 1e-4 and error.max() < 5e-3
    assert np.abs(out.alpha.numpy() - alpha).mean() < 1e-5


def test_culling_near_plane_and_sh_degree():
    g = make_scene(10, seed=3)
    g.means[0] = torch.tensor([0.0, 0.0, 0.595], dtype=torch.float64)  # 5 mm in front of the camera
    cameras = make_cameras(32, 32, yaws=(0.0,))
    out = render(g, cameras, sh_degree=1)
    rgb, _, _ = reference_render(g, cameras, np.zeros(3), degree=1)
    np.testing.assert_allclose(out.rgb.numpy(), rgb, atol=1e-4)
    assert out.info["radii"][0, 0].tolist() == [0, 0]
    with pytest.raises(ValueError, match="sh_degree"):
        render(make_scene(4, seed=0, sh_degree=1), cameras, sh_degree=2)


def test_single_gaussian_lands_at_projected_centre_with_predicted_footprint():
    fx, fy, cx, cy, width, height = 80.0, 60.0, 21.3, 14.8, 44, 30
    z, scale, opacity = 0.5, 0.01, 0.8
    point = np.array([0.03, -0.02, 0.0])  # world; camera at (0, 0, z) looking down -Z
    f64 = dict(dtype=torch.float64)
    g = Gaussians(torch.tensor(point[None], **f64), torch.tensor([[1.0, 0.0, 0.0, 0.0]], **f64),
                  torch.full((1, 3), scale, **f64), torch.tensor([opacity], **f64),
                  torch.zeros(1, 1, 3, **f64))
    viewmat = np.diag([1.0, -1.0, -1.0, 1.0])
    viewmat[2, 3] = z
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    out = render(g, Cameras(torch.tensor(viewmat)[None], torch.tensor(K)[None], width, height))
    # Camera coordinates (x, -y, z): centre fx x / z + cx; footprint J J^T s^2 + low-pass (J: x/z terms).
    x_c, y_c = point[0], -point[1]
    u, v = fx * x_c / z + cx, fy * y_c / z + cy
    J = np.array([[fx / z, 0, -fx * x_c / z**2], [0, fy / z, -fy * y_c / z**2]])
    cov = scale**2 * J @ J.T + SPLAT_LOW_PASS_PX2 * np.eye(2)
    assert torch.allclose(out.info["means2d"][0, 0], torch.tensor([u, v], dtype=torch.float64))
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    d = np.stack([xs - u, ys - v], -1)
    expected = opacity * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d))
    expected[expected < 1 / 255] = 0
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), expected, atol=1e-9)
    alpha = out.alpha[0, ..., 0].numpy()
    centroid = (alpha[..., None] * np.stack([xs, ys], -1)).sum((0, 1)) / alpha.sum()
    np.testing.assert_allclose(centroid, [u, v], atol=0.05)
    sigmas = min(3.33, np.sqrt(2 * np.log(255 * opacity)))  # where alpha reaches 1/255
    assert out.info["radii"][0, 0].tolist() == np.ceil(sigmas * np.sqrt(np.diag(cov))).astype(int).tolist()
    inside = expected > 0
    assert inside.any(0).sum() <= 2 * out.info["radii"][0, 0, 0] + 1
    assert inside.any(1).sum() <= 2 * out.info["radii"][0, 0, 1] + 1


def test_sh_basis_is_the_orthonormal_real_basis():
    from scipy.special import sph_harm_y

    rng = np.random.default_rng(0)
    theta, phi = np.arccos(rng.uniform(-1, 1, 20)), rng.uniform(0, 2 * np.pi, 20)
    dirs = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
    ours = sh_basis(3, torch.tensor(dirs)).numpy()
    for index in range(16):
        degree = int(np.sqrt(index))
        matches = []
        for m in range(-degree, degree + 1):
            complex_y = sph_harm_y(degree, abs(m), theta, phi)
            real = np.sqrt(2) * (complex_y.imag if m < 0 else complex_y.real) if m else complex_y.real
            matches.append(np.allclose(np.abs(ours[:, index]), np.abs(real), atol=1e-9))
        assert any(matches), f"SH basis {index} is not a real spherical harmonic of degree {degree}"


def test_backend_selection_and_errors():
    g, cameras = make_scene(5, seed=0), make_cameras(16, 16, yaws=(0.0,))
    assert render(g, cameras, backend="auto").info["backend"] == "torch"
    with pytest.raises(ValueError, match="backend"):
        render(g, cameras, backend="vulkan")
    if not torch.cuda.is_available():
        with pytest.raises(NotAvailableError, match="CUDA"):
            render(g, cameras, backend="gsplat")
    with pytest.raises(ValueError, match="Gaussians.scales"):
        render(Gaussians(g.means, g.quats, g.scales[:3], g.opacities, g.sh), cameras)
    with pytest.raises(ValueError, match="background"):
        render(g, cameras, background=torch.zeros(2, 3))


@pytest.mark.parametrize("n", [0, 3])
def test_nothing_visible_renders_the_background(n):
    behind = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)  # behind the camera at z = 0.6
    g = Gaussians(torch.zeros(n, 3, dtype=torch.float64) + behind, torch.randn(n, 4, dtype=torch.float64),
                  torch.full((n, 3), 0.01, dtype=torch.float64), torch.full((n,), 0.5, dtype=torch.float64),
                  torch.zeros(n, 1, 3, dtype=torch.float64))
    g.means.requires_grad_(True)
    out = render(g, make_cameras(20, 12, yaws=(0.0,)), background=torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out.rgb, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).expand(1, 12, 20, 3))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0 and out.info["n_pairs"] == 0
    out.rgb.sum().backward()
    assert g.means.grad.shape == (n, 3) and (g.means.grad == 0).all()


def test_culled_pairs_never_reach_the_alpha_cut_and_most_corners_go():
    """``cull_pairs`` against every pixel centre of every tile: a dropped pair's alpha stays <= 1/255
    on its whole tile (so dropping it cannot change an image), and most pairs that never reach it
    (the corners of elongated footprints' boxes) are dropped."""
    from backend.render.projection import ALPHA_MIN, project_gaussians
    from backend.render.tiles import cull_pairs, intersect_tiles

    g, cameras = make_scene(60, seed=11), make_cameras(48, 40)
    g.scales[:, 0] *= 4.0  # elongated footprints: many box tiles the ellipse misses
    width, height, tile = cameras.width, cameras.height, 8
    p = project_gaussians(g.means, g.quats, g.scales, g.opacities, cameras.viewmats, cameras.Ks, width,
                          height)
    pairs = intersect_tiles(p.means2d, p.extents, p.depths, width, height, tile)
    footprints = torch.cat([p.means2d.reshape(-1, 2), p.conics.reshape(-1, 3),
                            g.opacities.log().repeat(len(cameras))[:, None]], 1)
    culled = cull_pairs(pairs, footprints, tile, float(np.log(ALPHA_MIN)))
    kept = set(zip(culled.tile_ids.tolist(), culled.flat_ids.tolist()))
    offsets = np.arange(tile) + 0.5
    n_never, n_never_dropped = 0, 0
    for tile_id, row in zip(pairs.tile_ids.tolist(), pairs.flat_ids.tolist()):
        local = tile_id % (pairs.tiles_x * pairs.tiles_y)
        ys, xs = np.meshgrid(local // pairs.tiles_x * tile + offsets, local % pairs.tiles_x * tile + offsets,
                             indexing="ij")
        (mx, my), (a, b, c) = footprints[row, :2].numpy(), footprints[row, 2:5].numpy()
        dx, dy = xs - mx, ys - my
        peak = np.exp(footprints[row, 5].item() - 0.5 * (a * dx**2 + 2 * b * dx * dy + c * dy**2)).max()
        if (tile_id, row) not in kept:
            assert peak <= ALPHA_MIN, (tile_id, row, peak)
        if peak <= ALPHA_MIN:
            n_never += 1
            n_never_dropped += (tile_id, row) not in kept
    assert n_never > 20 and n_never_dropped >= 0.9 * n_never
    assert culled.tile_counts.sum() == culled.flat_ids.numel() < pairs.flat_ids.numel()
    assert torch.equal(culled.tile_starts, torch.cumsum(culled.tile_counts, 0) - culled.tile_counts)
