"""mediapipe FaceMesh landmark regions (ids 0..477) and their weights in the fit.

The sets are mediapipe's own FACEMESH_* connection sets (face_mesh_connections.py), listed here
so the fit does not need to import mediapipe.
"""

from __future__ import annotations

import numpy as np

LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185,
        191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409,
        415)
EYE_LEFT = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
EYE_RIGHT = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
BROW_LEFT = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
BROW_RIGHT = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176,
             234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
NOSE = (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326,
        327, 344, 440)
# Ordered contours (closed polygons) of the same sets, for drawing and region tests.
LIPS_OUTER_RING = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
                   40, 185)
BROW_RIGHT_RING = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)    # upper edge, then lower reversed
BROW_LEFT_RING = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
FACE_OVAL_RING = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                  377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
                  109)
# "Left"/"right" are the subject's: 473 is the centre of the subject's left iris (eye_L joint).
IRIS_LEFT = (473, 474, 475, 476, 477)
IRIS_RIGHT = (468, 469, 470, 471, 472)
IRIS_CENTRE_LEFT = 473
IRIS_CENTRE_RIGHT = 468

# Weight of each region in the landmark loss. The face oval is a silhouette (it slides over the
# surface as the head turns), so it counts less than points fixed on the surface.
# The iris centres drive gaze; the rim points count less, since models draw the iris outline
# differently (the built-in model's iris is flatter than mediapipe's circle).
REGION_WEIGHTS = {"lips": 2.0, "eyes": 2.0, "brows": 1.0, "nose": 1.5, "oval": 0.3, "iris": 1.0,
                  "iris_centre": 6.0}


def landmark_weights(ids: np.ndarray) -> np.ndarray:
    """Per-landmark loss weights for mediapipe ids. (L,) int -> (L,) float32."""
    table = np.ones(478, dtype=np.float32)
    groups = {"lips": LIPS, "eyes": EYE_LEFT + EYE_RIGHT, "brows": BROW_LEFT + BROW_RIGHT,
              "nose": NOSE, "oval": FACE_OVAL, "iris": IRIS_LEFT + IRIS_RIGHT}
    for name, members in groups.items():
        table[list(members)] = REGION_WEIGHTS[name]
    table[[IRIS_CENTRE_LEFT, IRIS_CENTRE_RIGHT]] = REGION_WEIGHTS["iris_centre"]
    return table[np.asarray(ids, dtype=np.int64)]


def region_of(ids: np.ndarray) -> np.ndarray:
    """A region name per mediapipe id ("other" where none). (L,) -> (L,) str."""
    names = np.full(478, "other", dtype=object)
    for name, members in (("oval", FACE_OVAL), ("nose", NOSE), ("brows", BROW_LEFT + BROW_RIGHT),
                          ("eyes", EYE_LEFT + EYE_RIGHT), ("lips", LIPS),
                          ("iris", IRIS_LEFT + IRIS_RIGHT)):
        names[list(members)] = name
    return names[np.asarray(ids, dtype=np.int64)]
