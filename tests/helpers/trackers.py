"""TensorBoard's and MLflow's records of a run, read back with each library's own reader (no grepping of files)."""

from __future__ import annotations

import re
from pathlib import Path


def tensorboard(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[int]]]:
    """(scalar tag -> [(step, value)], image tag -> [steps]) as TensorBoard shows them: EventAccumulator over
    RUN_DIR/tensorboard, its purge of a restarted writer's stale steps included."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    return scalars, {t: [e.step for e in acc.Images(t)] for t in tags["images"]}


def tensorboard_hparams(run_dir: Path) -> dict[str, object]:
    """The hyperparameters the run stored (TensorBoard's HParams plugin data, in a sub-run of its own)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, object] = {}
    for sub in sorted(p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()):
        acc = EventAccumulator(str(sub))
        acc.Reload()
        try:
            contents = acc.PluginTagToContent("hparams").values()
        except KeyError:  # Accelerate's hparams.yml folder beside TensorBoard's own
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for k, v in data.session_start_info.hparams.items():
                    out[k] = v.string_value or v.number_value or v.bool_value
    return out


def mlflow_run(run_dir: Path) -> tuple[object, dict[str, list[tuple[int, float]]], dict[str, list[int]]]:
    """(the run, metric -> [(step, value)] in logged order, image key -> [steps]) of RUN_DIR/mlflow_id in the
    run directory's SQLite store, through MlflowClient."""
    import mlflow

    uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = (run_dir / "mlflow_id").read_text().strip()
    run = client.get_run(run_id)
    history = {
        k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.timestamp)]
        for k in run.data.metrics
    }
    images: dict[str, list[int]] = {}
    for art in client.list_artifacts(run_id, "images"):
        # mlflow.log_image(key=, step=) names each file KEY+step+N+timestamp+...; "/" in a key becomes "~"
        m = re.match(r"images/(.+?)\+step\+(\d+)\+.*(?<!compressed)\.png$", art.path)
        if m:
            images.setdefault(m.group(1).replace("~", "/"), []).append(int(m.group(2)))
    return run, history, {k: sorted(v) for k, v in images.items()}


def same_history(straight: Path, resumed: Path, key: str, steps: list[int], exact: bool) -> None:
    """Both runs' TensorBoard and MLflow histories of `key` hold each of `steps` once (the resumed run's in one
    MLflow run that finished), with equal values when the resume is bit-exact."""
    (tb_a, _), (tb_b, _) = tensorboard(straight), tensorboard(resumed)
    (_, ml_a, _), (run_b, ml_b, _) = mlflow_run(straight), mlflow_run(resumed)
    for got in (tb_a, tb_b, ml_a, ml_b):
        assert [step for step, _ in got[key]] == steps
    assert run_b.info.status == "FINISHED"  # type: ignore[attr-defined]
    if exact:
        assert tb_b[key] == tb_a[key] and ml_b[key] == ml_a[key]
