"""The one place where head space becomes Blender space (numpy only, no bpy).

Head space (the avatar and tracking files, FLAME's axes): +X the subject's left, +Y up, +Z out of
the face. Blender: +Z up and a character faces -Y. The conversion is the proper rotation

    (x, y, z)_head -> (x, -z, y)_blender          i.e.  p_blender = HEAD_TO_BLENDER @ p_head

(+90 degrees about X). Lengths stay in metres. Everything the add-on writes into Blender
(positions, quaternions, joint positions, rotations, translations) goes through this module.
"""

from __future__ import annotations

import numpy as np

HEAD_TO_BLENDER = np.array([[1.0, 0.0, 0.0],
                            [0.0, 0.0, -1.0],
                            [0.0, 1.0, 0.0]])

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199  # the SH band-1 constant (3DGS)


def points_to_blender(points: np.ndarray) -> np.ndarray:
    """Positions or direction vectors (..., 3) in head space -> Blender space, same dtype."""
    points = np.asarray(points)
    out = np.empty_like(points)
    out[..., 0] = points[..., 0]
    out[..., 1] = -points[..., 2]
    out[..., 2] = points[..., 1]
    return out


def quats_to_blender(quats: np.ndarray) -> np.ndarray:
    """Rotation quaternions (..., 4) w, x, y, z in head space -> the same rotation in Blender space.

    A rotation R becomes C R C^T; for a quaternion that rotates its vector part by C.
    """
    quats = np.asarray(quats)
    out = np.empty_like(quats)
    out[..., 0] = quats[..., 0]
    out[..., 1:] = points_to_blender(quats[..., 1:])
    return out


def gaussian_quats_to_blender(quats: np.ndarray) -> np.ndarray:
    """Gaussian orientations (..., 4) w, x, y, z in head space -> Blender-space quaternions.

    A Gaussian's quaternion maps its own frame (where its ``scale`` is given, unchanged) into head
    space: Sigma = R S^2 R^T. In Blender the same frame maps by C R, the quaternion q_C * q (not
    the conjugation C R C^T of ``quats_to_blender``, which would need the scales permuted).
    """
    quats = np.asarray(quats)
    half = np.sqrt(0.5)  # q_C: +90 degrees about X
    w, x, y, z = (quats[..., i] for i in range(4))
    out = np.empty_like(quats)
    out[..., 0] = half * (w - x)
    out[..., 1] = half * (x + w)
    out[..., 2] = half * (y - z)
    out[..., 3] = half * (z + y)
    return out


def axis_angle_to_quats(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) -> unit quaternions (..., 4) w, x, y, z (float64)."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(a/2)/a, with its limit 1/2 near zero.
    factor = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([np.cos(half), axis_angle * factor], axis=-1)


def pose_bone_quats(rotations: np.ndarray, bone_rest_rotations: np.ndarray) -> np.ndarray:
    """Joint rotations of the head model -> pose-bone quaternions that skin identically.

    The backend's LBS rotates joint j by R_j about its rest position, relative to its parent, in
    head space. Blender's armature deform for bone j is D_j = D_parent @ B_j @ L_j @ B_j^-1 with
    B_j the bone's rest matrix (head at the joint, rotation M_j) and L_j its pose (matrix_basis).
    Matching T(J) R_j T(-J) needs L_j = M_j^T (C R_j C^T) M_j: the same angle about the axis
    M_j^T C r_j.

    Args:
        rotations: (..., J, 3) axis-angle per joint, head space (tracking ``joint_rotations``).
        bone_rest_rotations: (J, 3, 3) rotation part of each bone's ``matrix_local`` (armature
            space, which is Blender space: the armature object has an identity transform).

    Returns:
        (..., J, 4) quaternions w, x, y, z for ``pose_bone.rotation_quaternion``.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    rests = np.asarray(bone_rest_rotations, dtype=np.float64)
    if rotations.shape[-2:] != (rests.shape[0], 3) or rests.shape[1:] != (3, 3):
        raise ValueError(f"rotations {rotations.shape} do not match {rests.shape[0]} bones")
    blender_axes = points_to_blender(rotations)
    local_axes = np.einsum("jba,...jb->...ja", rests, blender_axes)  # M_j^T @ (C r_j)
    return axis_angle_to_quats(local_axes)


def root_location(translation: np.ndarray, root_rest_rotation: np.ndarray) -> np.ndarray:
    """Global translation (..., 3) in head space -> the root pose bone's ``location``.

    Shown in the bone's rest frame: L_root = T(M^T C t) R gives D_root = T(C t) B R B^-1.
    """
    blender = points_to_blender(np.asarray(translation, dtype=np.float64))
    return np.einsum("ba,...b->...a", np.asarray(root_rest_rotation, dtype=np.float64), blender)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Display sRGB values in [0, 1] -> Blender's linear scene colours (IEC 61966-2-1)."""
    srgb = np.clip(np.asarray(srgb, dtype=np.float64), 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def sh_dc_to_rgb(sh_dc: np.ndarray) -> np.ndarray:
    """The view-independent colour of a Gaussian from its SH DC term (N, 3) -> sRGB in [0, 1]."""
    return np.clip(0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float64), 0.0, 1.0)


OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])  # x right, y down, z forward -> y up, -z view


def camera_matrix_world(extrinsics: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera matrices (..., 4, 4) in head space -> Blender camera
    ``matrix_world`` (..., 4, 4): the camera's pose in Blender space, Blender camera axes."""
    extrinsics = np.asarray(extrinsics, dtype=np.float64)
    pose = np.linalg.inv(extrinsics)  # camera-to-world, OpenCV camera axes
    out = np.zeros_like(pose)
    out[..., :3, :3] = HEAD_TO_BLENDER @ pose[..., :3, :3] @ OPENCV_TO_BLENDER_CAMERA
    out[..., :3, 3] = points_to_blender(pose[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def camera_lens(intrinsics: np.ndarray, width: int, height: int,
                sensor_width: float) -> tuple[float, float, float]:
    """A pinhole K (3, 3) in pixels of a width x height image -> Blender ``lens`` (mm, for
    ``sensor_width`` and sensor fit AUTO), ``shift_x`` and ``shift_y``.

    Blender's focal length in pixels is lens / sensor_width x max(width, height), and the shifts
    are in units of max(width, height), +y up (OpenCV's cy counts down).
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    size = float(max(width, height))
    lens = 0.5 * (k[0, 0] + k[1, 1]) / size * sensor_width
    return lens, (0.5 * width - k[0, 2]) / size, (k[1, 2] - 0.5 * height) / size
