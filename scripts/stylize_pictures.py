"""input | toon | cel pictures for docs/images (docs/STYLIZE.md).

    python scripts/stylize_pictures.py DIR FRAME OUT.png [KEY=VALUE ...]

DIR is a prepared-data folder (``python -m backend prepare``), FRAME the position of the frame
shown among DIR/frames/*.png. Each style runs over the 40 frames before it (temporal state
included) with its default parameters; KEY=VALUE pairs go to ``cel``. The three panels are
scaled to 320 x 320 and labelled; the PNG is written at the highest compression, and as 256
colours (median cut, no dithering) when it would be over ``MAX_BYTES`` (docs pictures' limit).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PANEL = 320
RUN_IN = 40     # frames stylized before the one shown
MAX_BYTES = 300_000


def stylized_frame(folder: str, names: list[str], index: int, style: str,
                   params: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) of frame ``index`` after running ``style`` over the frames before it."""
    from backend.fileio import read_png
    from backend.stylize import builtin_stylizer
    from backend.stylize.context import ContextReader
    from backend.stylize.pipeline import clip_samples

    stylizer = builtin_stylizer(style, params)
    reader = ContextReader(folder, names, detect=stylizer.uses_context)
    if stylizer.uses_context:
        stylizer.fit_clip(clip_samples(os.path.join(folder, "frames"), names, reader))
    for position in range(max(0, index - RUN_IN), index + 1):
        frame = read_png(os.path.join(folder, "frames", names[position]))
        context = reader(position, frame) if stylizer.uses_context else None
        out = stylizer.stylize(frame, context)
    return frame, out


def picture(folder: str, index: int, params: dict[str, str]) -> np.ndarray:
    """(PANEL, 3 PANEL, 3) uint8 RGB: input | toon | cel, labelled."""
    import cv2

    names = sorted(n for n in os.listdir(os.path.join(folder, "frames")) if n.endswith(".png"))
    if not 0 <= index < len(names):
        raise SystemExit(f"frame {index} is not in {folder}/frames ({len(names)} frames)")
    frame, toon = stylized_frame(folder, names, index, "toon", {})
    _, cel = stylized_frame(folder, names, index, "cel", params)
    panels = []
    for image in (frame, toon, cel):
        shrink = image.shape[0] > PANEL
        panels.append(cv2.resize(image, (PANEL, PANEL),
                                 interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC))
    row = np.concatenate(panels, axis=1)
    for k, label in enumerate(("input", "toon", "cel")):
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(row, label, (k * PANEL + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour,
                        thickness, cv2.LINE_AA)
    return row


def main(argv: list[str]) -> None:
    import cv2

    if len(argv) < 3:
        raise SystemExit(__doc__)
    folder, index, out = argv[0], int(argv[1]), argv[2]
    params = dict(pair.split("=", 1) for pair in argv[3:])
    row = picture(folder, index, params)
    cv2.imwrite(out, row[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if os.path.getsize(out) > MAX_BYTES:
        from PIL import Image

        Image.fromarray(row).quantize(256, method=Image.Quantize.MEDIANCUT,
                                      dither=Image.Dither.NONE).save(out, optimize=True)
    print(out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
