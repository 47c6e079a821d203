"""Rebuild the old heads (``prompt-injection/``, ``content-safety/``) and the nanoguard export:
the models the runtime loads until the guard network is ported. Their figures are kept in
``metrics.json`` under ``legacy``; the independent-set comparison with the new network is in
``evaluate.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from _common import bastion


def nanoguard_zero_shot(root: Path) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from appliance.guards.sequence_classifier import SequenceClassifier

    nano = SequenceClassifier(root / "nanoguard", threads=2)
    rows = bastion()
    y = np.array([e.label for e in rows])
    p = np.array([r.score for r in nano.classify_batch([e.text for e in rows])])
    return {"bastion_auc": round(float(roc_auc_score(y, p)), 4),
            "bastion_tpr_at_0.5": round(float(np.mean(p[y == 1] >= 0.5)), 4),
            "bastion_fpr_at_0.5": round(float(np.mean(p[y == 0] >= 0.5)), 4)}


def rebuild(root: Path, log: list[str]) -> dict[str, Any]:
    import export_nanoguard
    import train_heads

    from appliance.encoder.sentence import Encoder

    export_nanoguard.export(root / "nanoguard", log)
    encoder = Encoder.from_manifest(threads=1)
    return {"training": train_heads.train_all(encoder, root, log),
            "nanoguard_zero_shot": nanoguard_zero_shot(root)}
