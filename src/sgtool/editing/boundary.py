"""Train an InterFaceGAN boundary: a linear SVM separating latents with high and low attribute scores.

Recipe (Shen et al., "Interpreting the Latent Space of GANs for Semantic Face Editing"): sort the
samples by score, keep the top and bottom `ratio` as positives and negatives, split each into
train/validation, fit a linear SVM and return its unit normal: moving along it raises the score.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SgtoolError
from ..latents import load_latents


@dataclass
class Boundary:
    normal: np.ndarray  # unit vector [D]
    val_accuracy: float | None  # on the held-out top/bottom samples
    remaining_accuracy: float | None  # on the samples between, split at the middle score
    train_per_class: int
    val_per_class: int
    num_samples: int


def train_boundary(latents: np.ndarray, scores: np.ndarray, ratio: float = 0.02, split: float = 0.7,
                   seed: int = 0) -> Boundary:
    """latents [N, D], scores [N] -> Boundary. `ratio` <= 1 is a fraction per class, > 1 a count."""
    from sklearn import svm

    latents = np.asarray(latents, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if latents.ndim != 2 or latents.shape[0] != scores.shape[0]:
        raise SgtoolError(f"boundary training needs one score per latent: got {latents.shape[0]} latents "
                          f"and {scores.shape[0]} scores")
    if not 0 < split <= 1:
        raise SgtoolError(f"boundary split must be in (0, 1], got {split}")
    if ratio <= 0:
        raise SgtoolError(f"boundary ratio must be positive, got {ratio}")
    num = latents.shape[0]
    chosen = int(num * ratio) if ratio <= 1 else int(ratio)
    chosen = min(chosen, num // 2)
    train_num = int(round(chosen * split))
    if train_num < 2:
        raise SgtoolError(f"{num} samples with ratio {ratio} leave {train_num} training samples per class; "
                          "give more scored latents or raise the ratio (--set boundary_ratio=0.2)")
    order = np.argsort(-scores, kind="stable")
    latents, scores = latents[order], scores[order]
    rng = np.random.default_rng(seed)
    positive = latents[:chosen][rng.permutation(chosen)]
    negative = latents[num - chosen:][rng.permutation(chosen)]
    x_train = np.concatenate([positive[:train_num], negative[:train_num]])
    y_train = np.r_[np.ones(train_num), np.zeros(train_num)]
    if len(np.unique(np.r_[scores[:chosen], scores[num - chosen:]])) < 2:
        raise SgtoolError("every selected sample has the same score; the scores carry no attribute to learn")
    classifier = svm.SVC(kernel="linear").fit(x_train, y_train)

    val_num = chosen - train_num
    val_accuracy = None
    if val_num:
        x_val = np.concatenate([positive[train_num:], negative[train_num:]])
        y_val = np.r_[np.ones(val_num), np.zeros(val_num)]
        val_accuracy = float(np.mean(classifier.predict(x_val) == y_val))
    remaining_accuracy = None
    if num - 2 * chosen > 0:
        middle = (scores[0] + scores[-1]) / 2
        rest = slice(chosen, num - chosen)
        remaining_accuracy = float(np.mean(classifier.predict(latents[rest]) == (scores[rest] >= middle)))
    normal = classifier.coef_.reshape(-1)
    return Boundary(normal=(normal / np.linalg.norm(normal)).astype(np.float32), val_accuracy=val_accuracy,
                    remaining_accuracy=remaining_accuracy, train_per_class=train_num, val_per_class=val_num,
                    num_samples=num)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_scores_csv(path, num_ws: int | None = None, w_dim: int | None = None, space: str = "w"):
    """CSV rows of `latent,score` (optional header; an optional `name` column picks an entry of a
    stylegan3-editing dict file) -> (latents [N, D], scores [N], row labels).

    Latent paths are relative to the CSV's folder. space "w" averages each W+ code's rows (a
    mapped latent's rows are all equal, so that is its w); "wplus" flattens them.
    """
    path = Path(path)
    if space not in ("w", "wplus"):
        raise SgtoolError(f"boundary_space must be w or wplus, got {space!r}")
    try:
        rows = [row for row in csv.reader(path.read_text().splitlines()) if row and any(c.strip() for c in row)]
    except FileNotFoundError:
        raise SgtoolError(f"scores file {path} does not exist") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SgtoolError(f"scores file {path} is not a readable CSV ({exc})") from None
    columns = {"latent": 0, "score": 1, "name": None}
    first_line = 1
    if rows and not (len(rows[0]) > 1 and _is_number(rows[0][1].strip())):
        header = [cell.strip().lower() for cell in rows[0]]
        if "latent" not in header or "score" not in header:
            raise SgtoolError(f"{path}: the header must name 'latent' and 'score' columns (optionally 'name'), "
                              f"got {', '.join(header)}")
        columns = {key: header.index(key) if key in header else None for key in columns}
        rows = rows[1:]
        first_line = 2
    if not rows:
        raise SgtoolError(f"scores file {path} has no rows; write one line per latent: FILE.npy,SCORE")
    latents, scores, shapes = [], [], set()
    cache: dict[Path, dict] = {}
    for line, row in enumerate(rows, start=first_line):
        try:
            file = (path.parent / row[columns["latent"]].strip()).resolve()
            score = float(row[columns["score"]])
        except (IndexError, ValueError):
            raise SgtoolError(f"{path} line {line}: expected FILE,SCORE, got {','.join(row)!r}") from None
        if file not in cache:
            cache[file] = load_latents(file, num_ws, w_dim)
        entries = cache[file]
        name = row[columns["name"]].strip() if columns["name"] is not None and len(row) > columns["name"] else ""
        if name:
            if name not in entries:
                raise SgtoolError(f"{path} line {line}: {file} has no latent {name!r}")
            latent = entries[name]
        elif len(entries) == 1:
            name, latent = next(iter(entries.items()))
        else:
            raise SgtoolError(f"{path} line {line}: {file} holds {len(entries)} latents; add a 'name' column")
        shapes.add(latent.shape)
        if len(shapes) > 1:
            raise SgtoolError(f"{path} line {line}: the latents have different shapes {sorted(shapes)}; "
                              "use one generator's latents")
        latents.append(latent.mean(axis=0) if space == "w" else latent.reshape(-1))
        scores.append(score)
    return np.stack(latents), np.asarray(scores), shapes.pop()
