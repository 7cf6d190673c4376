"""A few images per (dataset, model) whose attributions every explainer keeps, for reports.

The gallery holds the same images for every explainer and every model of a
dataset (the first images of the benchmark's stratified sample order), so a
report can show where each explainer looks, side by side, and pick each
explainer's best, median and worst image among them by a metric.
Images are stored once per group as uint8 (with their masks); attributions
per cell as float16 (they are for pictures, not for scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.group import Group

GALLERY_DIR = "gallery"


def choose(group: Group, size: int) -> list[int]:
    """Positions (in the group's refs) of the gallery images: the first ``size`` of the benchmark's sample
    order (stratified and seeded, so classes alternate). The choice does not depend on the model, so every
    model of a dataset shows the same images; reports pick each explainer's best and worst among them."""
    return list(range(min(max(size, 0), len(group.refs))))


def images_table(group: Group, positions: list[int]) -> pa.Table:
    """The gallery images (uint8 HWC), their masks and prediction facts, as a table."""
    records = []
    wanted = set(positions)
    for batch_positions, batch in group.batches(torch.device("cpu")):
        for j, i in enumerate(batch_positions):
            if i not in wanted:
                continue
            image = (batch.x[j].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            mask = None if batch.mask is None else batch.mask[j, 0].numpy()
            names = group.dataset.classes
            records.append(
                {
                    "sample_id": group.refs[i].id,
                    "label": group.refs[i].label,
                    "label_name": names[group.refs[i].label],
                    "prediction_name": group.model.spec.class_names[int(group.prediction[i])]
                    if int(group.prediction[i]) < len(group.model.spec.class_names)
                    else str(int(group.prediction[i])),
                    "correct": group.plan.correct[i],
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "image": image.reshape(-1).tolist(),
                    "mask": None if mask is None else mask.reshape(-1).tolist(),
                }
            )
    frame = pd.DataFrame.from_records(records)
    frame["correct"] = frame["correct"].astype("boolean")
    return pa.Table.from_pandas(frame, preserve_index=False)


def attribution_table(items: list[tuple[str, np.ndarray]]) -> pa.Table:
    """(sample id, (H, W) attribution) pairs as a table: each map divided by its largest
    magnitude (``scale``) and stored as float16, which keeps pictures exact enough and
    cannot overflow."""
    scales = [float(np.abs(a).max()) or 1.0 for _, a in items]
    values = [(a / s).astype(np.float16).reshape(-1).tolist() for (_, a), s in zip(items, scales, strict=True)]
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("scale", pa.float64()),
            ("attribution", pa.list_(pa.float16())),
        ]
    )
    columns = {
        "sample_id": [sid for sid, _ in items],
        "height": [a.shape[0] for _, a in items],
        "width": [a.shape[1] for _, a in items],
        "scale": scales,
        "attribution": values,
    }
    return pa.table(columns, schema=schema)


def read_images(run_dir: Path, dataset_key: str, model_key: str) -> pd.DataFrame:
    path = Path(run_dir) / GALLERY_DIR / f"{dataset_key}__{model_key}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def table_maps(table: pa.Table) -> dict[str, np.ndarray]:
    """sample id -> (H, W) attribution of a table written by ``attribution_table``."""
    return {
        r.sample_id: np.asarray(r.attribution, dtype=np.float32).reshape(r.height, r.width) * r.scale
        for r in table.to_pandas().itertuples()
    }


def read_attributions(run_dir: Path, cell_id: str) -> dict[str, np.ndarray]:
    path = Path(run_dir) / GALLERY_DIR / f"{cell_id}.parquet"
    return table_maps(pq.read_table(path)) if path.exists() else {}
