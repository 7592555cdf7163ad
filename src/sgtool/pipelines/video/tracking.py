"""Stage 1: decode the clip (streamed) and follow the main face through it.

Each frame's faces come from the face mesh finder, largest quad first; `FaceTracker` picks the
one that continues the track (`face_index` picks it where no track is running). Progress is
saved every PARTIAL_SAVE_SECONDS, so a stopped run resumes where the last save left it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...errors import SgtoolError
from ...utils.io import save_npy
from ..align.run import key_points, quad_from_landmarks, quad_side
from ..align.faces import box_iou
from .cache import StageEntry, save_npz

MESH_POINTS = 478
PARTIAL_SAVE_SECONDS = 30.0  # how much tracking a killed run can lose
ARRAYS = ("found", "eyes", "mouth", "landmarks")


@dataclass
class Track:
    found: np.ndarray  # [T] bool
    eyes: np.ndarray  # [T, 2, 2]
    mouth: np.ndarray  # [T, 2, 2]
    landmarks: np.ndarray  # [T, 478, 2] float32 (zeros where no face)
    width: int
    height: int


def _box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


class FaceTracker:
    """Picks the main face in each frame: `face_index` (largest first) when there is no track, then the
    face that best continues the previous one (IoU, else centre distance under half the face size)."""

    def __init__(self, face_index: int, lost_after: int):
        self.face_index = face_index
        self.lost_after = max(1, lost_after)
        self.previous: np.ndarray | None = None
        self.missed = 0

    def choose(self, candidates: list[tuple[np.ndarray, object]]) -> int | None:
        if self.previous is None:
            pick = self.face_index if self.face_index < len(candidates) else None
        else:
            scores = []
            prev = self.previous
            size = max(prev[2] - prev[0], prev[3] - prev[1])
            for box, _ in candidates:
                iou = box_iou(prev, box)
                dist = np.hypot(*((box[:2] + box[2:]) / 2 - (prev[:2] + prev[2:]) / 2))
                scores.append(iou if iou > 0.2 or dist < 0.5 * size else -1.0)
            pick = int(np.argmax(scores)) if scores and max(scores) >= 0 else None
        if pick is None:
            self.missed += 1
            if self.missed > self.lost_after:
                self.previous = None  # the track is lost: pick by index again
        else:
            self.previous = candidates[pick][0]
            self.missed = 0
        return pick


def faces_in(finder, frame: np.ndarray, min_face_size: float) -> list[tuple]:
    """(box, eyes, mouth, landmarks) per face, largest quad first (the order `align_image` uses)."""
    out = []
    for face in finder.find(frame, min_face_size=min_face_size):
        eyes, mouth = key_points(face.landmarks)
        try:
            side = quad_side(quad_from_landmarks(eyes, mouth, "ffhq"))
        except SgtoolError:
            continue
        out.append((side, _box(face.landmarks), eyes, mouth, face.landmarks))
    out.sort(key=lambda item: -item[0])
    return [item[1:] for item in out]


def _no_face() -> tuple:
    return False, np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((MESH_POINTS, 2), np.float32)


def track_clip(clip, entry: StageEntry, products: dict) -> Track:
    partial = entry.path("partial.npz")
    done: dict[str, list] = {name: [] for name in ARRAYS}
    if entry.resumed and partial.is_file():
        with np.load(partial) as data:
            done = {name: list(data[name]) for name in ARRAYS}
    resumed = len(done["found"])
    if clip.finder is None:
        from ..align.faces import default_finder

        clip.finder = default_finder()
    tracker = FaceTracker(clip.options.face, lost_after=int(round(2 * float(clip.fps))))
    if any(done["found"]):
        tracker.previous = _box(np.asarray(done["landmarks"][int(np.flatnonzero(done["found"])[-1])]))
    shape, count, most_faces, last_save = None, 0, 0, time.perf_counter()
    clip.reporter.start("track faces", None)
    for index, frame in enumerate(clip.frames()):
        shape = frame.shape
        count += 1
        if index >= resumed:
            candidates = faces_in(clip.finder, frame, clip.options.min_face_size)
            most_faces = max(most_faces, len(candidates))
            pick = tracker.choose([(c[0], c) for c in candidates])
            values = _no_face() if pick is None else (True, *candidates[pick][1:3],
                                                       np.asarray(candidates[pick][3], np.float32))
            for name, value in zip(ARRAYS, values):
                done[name].append(value)
            if time.perf_counter() - last_save > PARTIAL_SAVE_SECONDS:
                save_npz(partial, **{name: np.asarray(v) for name, v in done.items()})
                last_save = time.perf_counter()
        clip.reporter.advance()
    clip.reporter.finish()
    _check_frames(clip, count, len(done["found"]))
    for name, value in done.items():
        save_npy(np.asarray(value), entry.path(f"{name}.npy"))
    partial.unlink(missing_ok=True)
    entry.meta.update(frames=count, width=int(shape[1]), height=int(shape[0]), most_faces=most_faces)
    clip.note(resumed_frames=resumed)
    return read_track(clip, entry, products)


def _check_frames(clip, count: int, tracked: int) -> None:
    if count == 0:
        raise SgtoolError(f"{clip.source}: no frames to process in the chosen range (start {clip.options.start}s, "
                          f"end {clip.options.end}); check --start/--end")
    if count != tracked:
        raise SgtoolError(f"{clip.source} decoded to {count} frames now but {tracked} before; pass --force to "
                          "start over")


def read_track(clip, entry: StageEntry, products: dict) -> Track:
    record = entry.meta or entry.record
    track = Track(found=np.load(entry.path("found.npy")), eyes=np.load(entry.path("eyes.npy")),
                  mouth=np.load(entry.path("mouth.npy")), landmarks=np.load(entry.path("landmarks.npy"),
                                                                           mmap_mode="r"),
                  width=int(record["width"]), height=int(record["height"]))
    most = int(record.get("most_faces") or 0)
    if not track.found.any() and most:
        raise SgtoolError(f"--face {clip.options.face} asks for face {clip.options.face + 1} "
                          f"(largest first), but {clip.source} shows at most {most} face(s) in a frame; use "
                          f"--face 0 to {most - 1}")
    if not track.found.any():
        raise SgtoolError(f"no face found in any of the {len(track.found)} frames of {clip.source}; give a clip with "
                          f"a visible face (faces smaller than --min-face-size {clip.options.min_face_size:g} px are "
                          "ignored)")
    clip.frame_count = len(track.found)
    return track
