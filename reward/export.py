"""Joined examples in VW's decision-service JSON (DSJSON), so VW's own tools read Brein's log.

Lines come in the order the online learner learns them, with the same features and labels, so
VW's CLI trained on the export with the same arguments reaches the same model. Fields starting
with '_' that VW does not know (VW skips them) carry what a replay needs: the raw features, the
action ids, the reward and its credit per outcome type, the shadow policies' pmfs, and the numeric
encoding of the model that decided (``_encoding``: namespace -> the line's numeric field -> kind and
edges; the line's own fields, not every one the model's lineage learned). The context ``c`` is
encoded with the reader's encoding (the champion lineage's, as the online learner learns it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bandit.encoding import LearnedEncoding, encoding_summary, model_encoding
from bandit.features import action_features
from reward.online import ExampleReader
from store.ports import ModelSnapshots
from store.records import START, Cursor


def dsjson_lines(reader: ExampleReader, models: ModelSnapshots, after: Cursor = START) -> Iterator[str]:
    encoder = reader.encoder
    encodings: dict[tuple[str, str], LearnedEncoding | None] = {}  # (policy, version) -> its encoding: few models decide
    for _, example, row in reader.read(after):
        deciding = (row.policy_id, row.model_version)
        if deciding not in encodings:
            encodings[deciding] = model_encoding(models, *deciding)
        context: dict[str, Any] = {ns: dict(features) for ns, features in encoder.encode(row.features).items()}
        context["_multi"] = [{ns: {name: 1 for name in names} for ns, names in action_features(a).items()} for a in example.actions]
        chosen = example.chosen
        ranking = [chosen] + [i for i in range(len(example.actions)) if i != chosen]
        yield json.dumps(
            {
                "_label_cost": example.cost,
                "_label_probability": example.probability,
                "_label_Action": chosen + 1,
                "_labelIndex": chosen,
                "Timestamp": datetime.fromtimestamp(row.event_time, tz=UTC).isoformat(),
                "Version": "1",
                "EventId": row.decision_id,
                "a": [i + 1 for i in ranking],
                "c": context,
                "p": [row.pmf[i] for i in ranking],
                "_reward": row.reward,
                "_credit": row.credit,
                "_time": row.event_time,
                "_features": row.features,
                "_actions": [a.id for a in example.actions],
                "_shadow": {policy: list(pmf) for policy, pmf in row.shadow.items()},
                "_encoding": encoding_summary(reader.features, encodings[deciding], row.features),
            },
            separators=(",", ":"),
        )
