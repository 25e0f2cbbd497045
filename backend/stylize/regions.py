"""Face regions of one frame: a label per pixel from FaceMesh landmarks, the person mask and colour.

Labels (``REGIONS``): background, clothes, hair, neck, skin, brows, lips, mouth interior,
sclera (eye whites), iris, teeth. The face parts come from landmark polygons (``faces``); inside
the inner lip contour, bright low-chroma pixels are teeth (``teeth_score``) and the rest is the
mouth interior. The rest of the person mask is split by colour, against a per-clip
:class:`ColourModel` (skin, hair and clothes colours in CIELAB): each pixel takes the nearest
of the colours allowed where it lies. Skin is allowed only inside the face oval, beside it
where the ears are and below it where the neck is (``skin_zone``), and there only in colours
skin can take in light or shadow (``skin_like``); on the forehead (inside the
oval above the brows and a little above the oval, ``forehead_zone``) only skin joined to the
face by skin straight below it counts. Clothes are allowed only below the mouth, so what is
above it and not skin is hair (a light hair highlight never becomes a patch of skin); below
the mouth, hair must also have the hair's hue (``hair_hue``), or it is clothes. Colours are
judged on the edge-preserving smoothed frame and the colour distances are blurred before they
are compared, so region edges follow the face and do not crawl with sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .faces import BROWS, EYES, FACE_OVAL, LIPS_INNER, LIPS_OUTER, iris_circle, polygon_mask

REGIONS = ("background", "clothes", "hair", "neck", "skin", "brows", "lips", "mouth", "sclera",
           "iris", "teeth")
BACKGROUND, CLOTHES, HAIR, NECK, SKIN, BROW, LIPS, MOUTH, SCLERA, IRIS, TEETH = range(len(REGIONS))
LAB_WEIGHTS = np.array([0.5, 1.0, 1.0], np.float32)   # lightness counts half in colour distances
SKIN_WEIGHTS = np.array([0.25, 1.0, 1.0], np.float32)  # shading changes lightness, not hue
SKIN_BONUS = 0.8           # skin varies more than hair or cloth: its distances count this much
NECK_BONUS = 0.6           # and this much again where the neck is expected
NOT_SKIN = 22.0            # colour model: pixels this far from the skin colour are hair or cloth
FOREHEAD_REACH = 0.2       # the forehead: up to this many face heights above the face oval
FOREHEAD_GAP = 0.06        # forehead skin may be cut off from the face by this much (face heights)
SKIN_DARKEST = 0.45        # skin outside the face oval: at least this much of the skin's lightness
SKIN_PALEST = 0.4          # and of its chroma
EAR_REACH = 0.2            # the ears: this many face widths beside the face oval
HAIR_HUE = 14.0            # below the mouth, hair is at most this far from the hair's (a, b)
TEETH_DARKER = 50.0        # teeth: at most this much darker than the skin (CIELAB L, 8-bit)
TEETH_CHROMA = 0.9         # and at most this fraction of the skin's chroma (at least 12)
TEETH_SOFT = 3.0           # softness of both thresholds (CIELAB units)


@dataclass
class ColourModel:
    """Per-clip colours that split the person mask: CIELAB (8-bit OpenCV scale) means.

    Attributes:
        skin_mean, skin_std: (3,) skin colour and its spread.
        hair: (3,) hair colour.
        clothes: (3,) clothes colour.
    """

    skin_mean: np.ndarray
    skin_std: np.ndarray
    hair: np.ndarray
    clothes: np.ndarray


def face_polygons(points: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """(H, W) uint8 masks (255 inside) of the landmark-defined parts of one face.

    Returns:
        ``face``, ``brows``, ``lips`` (outer contour), ``mouth`` (inner contour), ``eyes``
        (both openings) and ``iris`` (both iris discs, cut to the openings).
    """
    import cv2

    masks = {"face": polygon_mask(points, FACE_OVAL, shape),
             "lips": polygon_mask(points, LIPS_OUTER, shape),
             "mouth": polygon_mask(points, LIPS_INNER, shape)}
    masks["brows"] = np.maximum(polygon_mask(points, BROWS[0], shape),
                                polygon_mask(points, BROWS[1], shape))
    masks["eyes"] = np.maximum(polygon_mask(points, EYES[0], shape),
                               polygon_mask(points, EYES[1], shape))
    iris = np.zeros(shape, np.uint8)
    for eye in range(2):
        centre, radius = iris_circle(points, eye)
        cv2.circle(iris, tuple(np.round(centre * 16).astype(int)), int(round(radius * 16)), 255,
                   -1, cv2.LINE_AA, shift=4)
    masks["iris"] = np.minimum(iris, masks["eyes"])
    return masks


def region_labels(points: np.ndarray, mask: np.ndarray | None, lab: np.ndarray,
                  colours: ColourModel, teeth: np.ndarray | None = None) -> np.ndarray:
    """The region label of every pixel of one frame.

    Args:
        points: (478, 2) FaceMesh landmarks in pixels.
        mask: (H, W) uint8 person mask, or None (everything is the person).
        lab: (H, W, 3) uint8 CIELAB of the smoothed frame.
        colours: the clip's colour model.
        teeth: (H, W) float32 teeth score in [0, 1] (``teeth_score``, perhaps smoothed over
            time), or None to work it out from ``lab``.

    Returns:
        (H, W) uint8 labels, indices into ``REGIONS``.
    """
    shape = lab.shape[:2]
    parts = face_polygons(points, shape)
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    brow_y = float(points[[66, 296], 1].mean())
    mouth_y = float(points[[61, 291], 1].mean())
    person = np.ones(shape, bool) if mask is None else mask >= 128
    face = parts["face"] >= 128
    neck = neck_zone(points, shape)
    forehead = forehead_zone(points, shape)
    allowed = face | forehead | (skin_zone(points, shape, neck) & skin_like(lab, colours))
    nearest = nearest_colour(lab, colours, neck, allowed, rows >= mouth_y)  # skin, hair, clothes
    features = (parts["brows"] >= 128) | (parts["eyes"] >= 128)
    nearest[forehead & ~skin_from_below((nearest == 0) | features, forehead,
                                        round(FOREHEAD_GAP * face_height(points)))] = 1
    labels = np.full(shape, BACKGROUND, np.uint8)
    nearest[(nearest == 1) & (rows >= mouth_y) & ~hair_hue(lab, colours)] = 2
    labels[person] = np.array([SKIN, HAIR, CLOTHES], np.uint8)[nearest[person]]
    labels[(labels == SKIN) & (rows > mouth_y) & ~face] = NECK
    labels[face & ((nearest != 1) | (rows >= brow_y))] = SKIN   # hair inside: a fringe
    for name, label in (("brows", BROW), ("lips", LIPS), ("mouth", MOUTH), ("eyes", SCLERA),
                        ("iris", IRIS)):
        labels[parts[name] >= 128] = label
    if teeth is None:
        teeth = teeth_score(lab, points, colours)
    labels[(parts["mouth"] >= 128) & (teeth >= 0.5)] = TEETH
    return labels


def hair_hue(lab: np.ndarray, colours: ColourModel) -> np.ndarray:
    """(H, W) bool: pixels whose chromaticity (a, b, blurred a little) is within ``HAIR_HUE`` of
    the hair's: below the mouth, what is not is clothes (a grey collar or a bright trim is not
    hair even where it is nearer the hair's colour than the clothes')."""
    import cv2

    ab = lab[..., 1:].astype(np.float32) - np.asarray(colours.hair, np.float32)[1:]
    distance = cv2.GaussianBlur(np.sqrt(np.einsum("hwc,hwc->hw", ab, ab)), (0, 0),
                                max(0.7, min(lab.shape[:2]) / 256.0))
    return distance < HAIR_HUE


def forehead_zone(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the forehead, inside the face oval and above it: from the brows up to
    ``FOREHEAD_REACH`` face heights above the oval's top, between the temples."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    columns = np.arange(shape[1], dtype=np.float32)[None, :]
    left, right = sorted((float(points[234, 0]), float(points[454, 0])))
    top = float(points[list(FACE_OVAL), 1].min()) - FOREHEAD_REACH * face_height(points)
    brow_y = float(points[[66, 296], 1].mean())
    return (rows > top) & (rows < brow_y) & (columns > left) & (columns < right)


def skin_from_below(skin: np.ndarray, zone: np.ndarray, gap: int = 0) -> np.ndarray:
    """(H, W) bool: pixels of ``zone`` that are ``skin`` and joined to the face below the zone
    by a run of skin straight below them, broken by no more than ``gap`` pixels (a forehead
    is, past a brow's tail; a light strand in the hair above or in a fringe is not)."""
    import cv2

    rows = np.flatnonzero(zone.any(axis=1))
    joined = np.zeros_like(skin)
    if len(rows) == 0:
        return joined
    r0, r1 = rows[0], rows[-1] + 1
    below = min(r1 + 1, skin.shape[0])
    run = skin[r0:below]
    if gap > 0:
        run = cv2.morphologyEx(run.astype(np.uint8), cv2.MORPH_CLOSE,
                               np.ones((gap + 1, 1), np.uint8)).astype(bool)
    run = run[::-1]                                     # bottom row first
    joined[r0:below] = np.logical_and.accumulate(run, axis=0)[::-1]
    return joined & skin


def skin_like(lab: np.ndarray, colours: ColourModel) -> np.ndarray:
    """(H, W) bool: pixels that could be skin in shadow or light: lightness at least
    ``SKIN_DARKEST`` of the skin's and chroma at least ``SKIN_PALEST`` of the skin's (a black
    turtleneck or a grey collar is not, however near the neck it lies)."""
    skin = np.asarray(colours.skin_mean, np.float32)
    chroma = np.hypot(lab[..., 1].astype(np.float32) - 128, lab[..., 2].astype(np.float32) - 128)
    skin_chroma = float(np.hypot(skin[1] - 128, skin[2] - 128))
    return (lab[..., 0] >= SKIN_DARKEST * skin[0]) & (chroma >= SKIN_PALEST * skin_chroma)


def skin_zone(points: np.ndarray, shape: tuple[int, int], neck: np.ndarray) -> np.ndarray:
    """(H, W) bool: where skin may be outside the face oval: the neck zone and the ears (from
    the brows to the mouth, at most ``EAR_REACH`` face widths beside the oval)."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    columns = np.arange(shape[1], dtype=np.float32)[None, :]
    left, right = sorted((float(points[234, 0]), float(points[454, 0])))
    reach = EAR_REACH * (right - left)
    brow_y = float(points[[66, 296], 1].mean())
    mouth_y = float(points[[61, 291], 1].mean())
    ears = (rows > brow_y) & (rows < mouth_y) & (columns > left - reach) & (columns < right + reach)
    return neck | ears


def teeth_score(lab: np.ndarray, points: np.ndarray, colours: ColourModel) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much each pixel inside the inner lip contour looks like
    teeth (bright: at most ``TEETH_DARKER`` below the skin's lightness; and low in chroma: at
    most ``TEETH_CHROMA`` of the skin's, and at most 12), soft thresholds; 0 outside the mouth's bounding box.
    """
    from .faces import LIPS_INNER

    height, width = lab.shape[:2]
    score = np.zeros((height, width), np.float32)
    mouth = points[list(LIPS_INNER)]
    x0, y0 = np.maximum(np.floor(mouth.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(mouth.max(axis=0)).astype(int) + 2, (width, height))
    if x1 <= x0 or y1 <= y0:
        return score
    window = lab[y0:y1, x0:x1].astype(np.float32)
    skin = np.asarray(colours.skin_mean, np.float32)
    chroma = np.hypot(window[..., 1] - 128, window[..., 2] - 128)
    skin_chroma = float(np.hypot(skin[1] - 128, skin[2] - 128))
    light = (window[..., 0] - (skin[0] - TEETH_DARKER)) / TEETH_SOFT
    pale = (max(TEETH_CHROMA * skin_chroma, 12.0) - chroma) / TEETH_SOFT
    score[y0:y1, x0:x1] = 1.0 / (1.0 + np.exp(-np.minimum(light, pale)))
    return score


def neck_zone(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: below the mouth, above 0.8 face heights under the chin, between the jaw
    angles (widened by a tenth): where the neck is (in its own shadow, often nearer the clothes' colour)."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    columns = np.arange(shape[1], dtype=np.float32)[None, :]
    left, right = sorted((float(points[172, 0]), float(points[397, 0])))
    left, right = left - 0.1 * (right - left), right + 0.1 * (right - left)
    mouth_y, chin_y = float(points[[61, 291], 1].mean()), float(points[152, 1])
    return (rows > mouth_y) & (rows < chin_y + 0.8 * face_height(points)) \
        & (columns > left) & (columns < right)


def nearest_colour(lab: np.ndarray, colours: ColourModel, neck: np.ndarray | None = None,
                   skin_allowed: np.ndarray | None = None,
                   clothes_allowed: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8: which of skin (0), hair (1), clothes (2) each pixel's colour is nearest.

    Distances weigh lightness less (``SKIN_WEIGHTS``: shading changes lightness, not hue); skin
    counts ``NECK_BONUS`` closer inside ``neck``. They are measured at half size, blurred a
    little and scaled back up before they are compared: smooth edges at a quarter of the cost.
    Where ``skin_allowed`` / ``clothes_allowed`` (H, W) bool are False, that colour is never
    chosen (the nearest of the others is); hair is always allowed.
    """
    import cv2

    height, width = lab.shape[:2]
    small = cv2.resize(lab, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA) \
        if min(height, width) >= 64 else lab
    sigma = max(0.7, min(small.shape[:2]) / 192.0)
    distances = []
    for colour, factor in ((colours.skin_mean, SKIN_BONUS), (colours.hair, 1.0),
                           (colours.clothes, 1.0)):
        distance = cv2.GaussianBlur(colour_distance(small, colour, SKIN_WEIGHTS) * factor, (0, 0),
                                    sigma)
        if small.shape[:2] != (height, width):
            distance = cv2.resize(distance, (width, height), interpolation=cv2.INTER_LINEAR)
        distances.append(distance)
    if neck is not None:
        distances[0] = np.where(neck, NECK_BONUS * distances[0], distances[0])
    for index, allowed in ((0, skin_allowed), (2, clothes_allowed)):
        if allowed is not None:
            distances[index] = np.where(allowed, distances[index], np.inf)
    nearest = (distances[1] < distances[0]).astype(np.uint8)
    nearest[distances[2] < np.minimum(distances[0], distances[1])] = 2
    return nearest


def colour_distance(lab: np.ndarray, colour: np.ndarray,
                    weights: np.ndarray = LAB_WEIGHTS) -> np.ndarray:
    """(H, W) float32 weighted CIELAB distance of every pixel to one colour."""
    difference = (lab.astype(np.float32) - np.asarray(colour, np.float32)) * np.sqrt(weights)
    return np.sqrt(np.einsum("hwc,hwc->hw", difference, difference))


def face_height(points: np.ndarray) -> float:
    """Forehead (landmark 10) to chin (152) distance in pixels."""
    return float(np.linalg.norm(points[10] - points[152]))


def colour_model(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> ColourModel:
    """The clip's colour model from a few (smoothed CIELAB frame, landmarks, mask) samples.

    Skin: the face oval less eyes, brows and lips, trimmed to its middle 60% of lightness.
    Hair: the person above the face oval's top. Clothes: the person a quarter face below the
    chin. Both leave skin-like pixels out; each has a plain default when nothing is found.
    """
    skin, hair, clothes = [], [], []
    for lab, points, _ in samples:
        shape = lab.shape[:2]
        parts = face_polygons(points, shape)
        features = np.maximum.reduce([parts["eyes"], parts["brows"], parts["lips"]])
        features = _dilate(features, max(1, int(0.04 * face_height(points))))
        pixels = lab[(parts["face"] >= 128) & (features < 128)]
        if len(pixels) > 20:
            low, high = np.percentile(pixels[:, 0], [20, 80])
            skin.append(pixels[(pixels[:, 0] >= low) & (pixels[:, 0] <= high)])
    if not skin:
        raise ValueError("no skin pixels in the samples")
    skin_pixels = np.concatenate(skin).astype(np.float32)
    model = ColourModel(np.median(skin_pixels, axis=0), skin_pixels.std(axis=0),
                        np.float32([60, 134, 138]), np.float32([150, 128, 128]))
    for lab, points, mask in samples:
        rows = np.arange(lab.shape[0])[:, None]
        person = np.ones(lab.shape[:2], bool) if mask is None else mask >= 128
        not_skin = colour_distance(lab, model.skin_mean, SKIN_WEIGHTS) > NOT_SKIN
        height = face_height(points)
        top, chin = float(points[10, 1]), float(points[152, 1])
        hair.append(lab[person & not_skin & (rows < top) & (rows > top - 0.5 * height)])
        clothes.append(lab[person & not_skin & (rows > chin + 0.25 * height)])
    for name, found in (("hair", hair), ("clothes", clothes)):
        pixels = np.concatenate(found) if found else np.zeros((0, 3))
        if len(pixels) > 20:
            setattr(model, name, np.median(pixels, axis=0).astype(np.float32))
    return model


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel)
